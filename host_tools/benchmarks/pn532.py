"""PN532 link costs: a command round trip through the driver and the emulator, and an APDU relayed
to a virtual card on pcscd + vpcd, beside the same APDU sent straight through pyscard.

The round trips between driver and emulator run on one core: across two, each hand-over waits
for the other core to wake, and the median came out 0.02 or 0.09 ms by the scheduler's chance
(the same code, run after run), so the table could not say whether the code moved."""

from __future__ import annotations

import gc
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from host_tools.benchmarks import Outcome, failing
from host_tools.pn532_emu import LocalCard, PN532Emulator, SocketStream, release_connection
from host_tools.pn532_sync import PN532

FIGURES = {
    "pn532.frame_rt_ms": "GetFirmwareVersion round trip (frame, ACK, response), blocking driver on "
                         "CPython to the emulator over a socket pair, on one core (median of 200), ms",
    "pn532.frame_rt_mpy_ms": "the same round trip from the asyncio driver on MicroPython over the "
                             "virtual board's reader UART (TCP) to the emulator, on one core "
                             "(median of 100), ms",
    "pn532.apdu_local_ms": "one DESFire GetVersion APDU through driver and emulator to an in-process "
                           "virtual card, on one core (median of 200), ms",
    "pn532.apdu_relay_ms": "the same APDU relayed by the emulator through pcscd + vpcd + pyscard to a "
                           "virtual card (median of 50), ms",
    "pn532.apdu_pcsc_ms": "baseline: the same APDU sent straight through pyscard (median of 50), ms",
}

QUICK_FIGURES = ["pn532.frame_rt_ms", "pn532.apdu_local_ms", "pn532.frame_rt_mpy_ms"]

GET_VERSION = bytes.fromhex("9060000000")
ABORT = bytes.fromhex("90AF000000")
READER = "Virtual PCD 00 00"

MPY_SCRIPT = """
import asyncio, sys, time
from board.vdev.pylinks import ReaderUART
from card_reader.pn532 import AsyncPN532

async def main(port):
    uart = ReaderUART()
    await asyncio.start_server(uart.serve_client, "127.0.0.1", port)
    print("LISTENING")
    while not uart.connected():
        await asyncio.sleep_ms(10)
    d = AsyncPN532(uart)
    await d.begin()
    times = []
    for _ in range(100):
        t = time.ticks_us()
        await d.firmware_version()
        times.append(time.ticks_diff(time.ticks_us(), t))
    times.sort()
    print("MEDIAN_US", times[len(times) // 2])

asyncio.run(main(int(sys.argv[1])))
"""


@contextmanager
def one_core() -> Iterator[None]:
    """Pin the calling thread to one CPU, then restore it; the threads and processes it starts
    meanwhile (the emulator's, MicroPython) inherit the pin (Linux affinity is per thread)."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _median_ms(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def _local(names: set[str]) -> dict[str, float]:
    from host_tools.cards import vcard

    out: dict[str, float] = {}
    a, b = socket.socketpair()
    emu = PN532Emulator()
    card = vcard.VirtualDesfire()
    emu.present(LocalCard(card.process, card.uid))
    with one_core(), emu.serve(b):
        d = PN532(SocketStream(a))
        d.begin()
        out["pn532.frame_rt_ms"] = _median_ms(d.firmware_version, 200)
        d.list_target()

        def apdu() -> None:
            d.exchange(GET_VERSION)
            d.exchange(ABORT)

        out["pn532.apdu_local_ms"] = _median_ms(apdu, 200) / 2
    a.close()
    return {k: v for k, v in out.items() if k in names}


def _mpy() -> float:
    from host_tools.mpy_build import DEFAULT_BUILD_DIR, build_device_tree
    from host_tools.paths import micropython, micropython_env

    build_device_tree(DEFAULT_BUILD_DIR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench_reader.py"
        script.write_text(MPY_SCRIPT)
        with one_core():  # the MicroPython process inherits it
            proc = subprocess.Popen([micropython(), "-X", "heapsize=128K", str(script), str(port)],
                                    env=micropython_env(DEFAULT_BUILD_DIR), cwd=tmp,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "LISTENING":
                raise RuntimeError("the MicroPython reader did not start")
            with one_core(), PN532Emulator().connect(("127.0.0.1", port)):
                out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for line in out.splitlines():
        if line.startswith("MEDIAN_US "):
            return int(line.split()[1]) / 1000
    raise RuntimeError(f"the MicroPython reader printed no figure: {out[-300:]!r}")


def _pcsc_figures() -> dict[str, float]:
    from host_tools.cards import pcsc, vcard

    out: dict[str, float] = {}
    card = vcard.VirtualDesfire()
    with vcard.VpcdClient(card, port=vcard.vpcd_port()):
        conn, transceive = pcsc.wait_for_card(READER)

        def direct() -> None:
            transceive(GET_VERSION)
            transceive(ABORT)

        out["pn532.apdu_pcsc_ms"] = _median_ms(direct, 50) / 2
        release_connection(conn)
        a, b = socket.socketpair()
        emu = PN532Emulator()
        emu.present(READER)
        with emu.serve(b):
            d = PN532(SocketStream(a), ack_timeout_ms=200)
            d.begin()
            d.list_target()

            def relayed() -> None:
                d.exchange(GET_VERSION)
                d.exchange(ABORT)

            out["pn532.apdu_relay_ms"] = _median_ms(relayed, 50) / 2
        emu.remove()
        a.close()
    pcsc.wait_until_absent(READER)
    return out


def _pcsc(names: set[str]) -> dict[str, float]:
    from host_tools.cards import pcsc

    proc = pcsc.start_pcscd()
    try:
        if not pcsc.wait_for_reader(READER):
            raise RuntimeError(f"pcscd with vsmartcard-vpcd shows no {READER!r} reader")
        out = _pcsc_figures()
    finally:
        gc.collect()  # pyscard releases its contexts in __del__: before pcscd stops
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    return {k: v for k, v in out.items() if k in names}


def run(names: set[str]) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    local = ("pn532.frame_rt_ms", "pn532.apdu_local_ms")
    with failing(out, *local):
        if names & set(local):
            out.update(_local(names))
    with failing(out, "pn532.frame_rt_mpy_ms"):
        if "pn532.frame_rt_mpy_ms" in names:
            out["pn532.frame_rt_mpy_ms"] = _mpy()
    pcsc = ("pn532.apdu_relay_ms", "pn532.apdu_pcsc_ms")
    with failing(out, *pcsc):
        if names & set(pcsc):
            out.update(_pcsc(names))
    return out
