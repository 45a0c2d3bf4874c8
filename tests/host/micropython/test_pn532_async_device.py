"""The asyncio PN532 driver on the real MicroPython unix port (64 KiB heap), over the virtual
board's reader UART (`board.vdev.pylinks.ReaderUART`, the TCP byte stream the firmware sees on
the PyPI interpreter), answered by the host's PN532 emulator: wake-up, SAM configuration,
firmware version, an empty field, a card listed and APDUs relayed, then the card leaving
mid-exchange."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from host_tools.cards import vcard
from host_tools.mpy_build import DEFAULT_BUILD_DIR, build_device_tree
from host_tools.paths import micropython, micropython_env
from host_tools.pn532_emu import LocalCard, PN532Emulator

SCRIPT = """
import asyncio, sys, gc
from board.vdev.pylinks import ReaderUART
from card_reader.pn532 import AsyncPN532, PN532Error

async def main(port):
    uart = ReaderUART()
    await asyncio.start_server(uart.serve_client, "127.0.0.1", port)
    print("LISTENING")
    while not uart.connected():
        await asyncio.sleep_ms(10)
    d = AsyncPN532(uart)
    print("FW", (await d.begin()).hex())
    print("EMPTY", await d.list_target())
    while True:
        t = await d.list_target()
        if t is not None:
            break
        await asyncio.sleep_ms(20)
    print("UID", t.uid.hex(), t.sak, t.ats.hex())
    print("R1", (await d.exchange(b"\\x90\\x60\\x00\\x00\\x00")).hex())
    try:
        await d.exchange(b"\\x90\\xaf\\x00\\x00\\x00")
        print("NO ERROR")
    except PN532Error as e:
        print("ERR", e.reason, e.detail)
    gc.collect()
    print("FREE", gc.mem_free())

asyncio.run(main(int(sys.argv[1])))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_async_driver_on_micropython_against_the_emulator(tmp_path: Path) -> None:
    build_device_tree(DEFAULT_BUILD_DIR)
    script = tmp_path / "reader_task.py"
    script.write_text(SCRIPT)
    port = free_port()
    proc = subprocess.Popen(
        [micropython(), "-X", "heapsize=64K", str(script), str(port)],
        env=micropython_env(DEFAULT_BUILD_DIR), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    emu = PN532Emulator()
    card = vcard.VirtualDesfire()

    def process(apdu: bytes) -> bytes:
        local.present = False  # the card answers this APDU, then leaves the field
        return card.process(apdu)

    local = LocalCard(process, card.uid)

    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "LISTENING"
        with emu.connect(("127.0.0.1", port)):
            assert proc.stdout.readline().split() == ["FW", "32010607"]
            assert proc.stdout.readline().split() == ["EMPTY", "None"]
            emu.present(local)
            out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert proc.returncode == 0, err
    uid, sak, ats = lines["UID"].split()
    assert uid == card.uid.hex() and sak == "32" and int(ats[:2], 16) * 2 == len(ats)
    assert lines["R1"].endswith("91af")
    assert lines["ERR"] == "card_lost 1"
    assert int(lines["FREE"]) > 0
