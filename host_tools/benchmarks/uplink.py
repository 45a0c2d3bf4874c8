"""Draining a 50,000-event backlog from a MicroPython device to the platform through
mosquitto on loopback, with platform acknowledgements (the real journal, uplink, broker,
ingest and SQLite). Baseline in the same run: the same broker and platform fed by a CPython
publisher with no journal and no device, i.e. the pipeline's own ceiling."""

from __future__ import annotations

import math
import subprocess
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from host_tools.benchmarks import Outcome, failing
from host_tools.deploy import application_image, board_for
from host_tools.mpy_build import build_device_tree
from host_tools.paths import micropython, micropython_env
from host_tools.services.mosquitto import Mosquitto
from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire import common
from wire.door import encode_events

DEVICE = Path(__file__).with_name("device") / "uplink_device.py"
WITH_ROM = Path(__file__).with_name("device") / "with_rom.py"
BACKLOG = 50_000
BLOCKS = 400
# The drain's heap: see uplink.heap_min_kib for the smallest that works. 104K (was 96K) since
# the uplink makes its 2,080-byte receive and 1,632-byte events buffers at boot: 96K failed
# allocating the second; 100K drained the smoke backlog, 4 KiB more is the margin. 112K since
# the codec comes from the wire package's modules (on this port, loaded from source with their
# bytecode in this heap): 104K failed allocating the receive buffer. 128K since the events are
# written into their batch one at a time (wire.door.events_put, Journal.records): their new
# names took the last of the qstr pool's headroom (uplink.qstr_headroom), and the next pool
# (7 KiB in one piece) left 112K no room to load asyncio's stream module at the first connect;
# 120K drained one door but left a headroom of 1 name, and two doors at once did not finish.
HEAP = "128K"
HEAPS_KIB = range(64, 257, 8)  # tried by the heap searches, smallest first
HEAP_BACKLOG = 2000  # events drained by each try of a heap search
MULTI_DEVICES, MULTI_BACKLOG = 4, 5000
BASELINE_EVENTS = 10_000
# 16 KiB cannot drain (the "does not fit" path), 256 KiB can
SMOKE = {"BACKLOG": 200, "HEAPS_KIB": (16, 256), "HEAP_BACKLOG": 50, "MULTI_DEVICES": 2,
         "MULTI_BACKLOG": 50, "BASELINE_EVENTS": 200}

FIGURES = {
    "uplink.drain_50k_s": "50,000-event backlog drained to the platform with platform acks, s",
    "uplink.drain_events_per_s": "drain rate of that backlog, events/s",
    "uplink.baseline_events_per_s": "baseline: CPython publisher straight into the same "
                                    "broker + platform (no device), events/s",
    "platform.ingest_events_per_s": "platform ingest with 4 devices draining 5,000-event "
                                              "backlogs at once (one broker, one platform), events/s",
    "uplink.heap_min_kib": "smallest MicroPython heap (8 KiB steps from 64) in which the journal + "
                           "uplink drain a 2,000-event backlog; unix port: the .mpy bytecode "
                           "lives in this heap too, KiB",
    "uplink.qstr_headroom": "names the journal + uplink door (after a drain) can still intern "
                            "before the interpreter allocates its next qstr pool in one piece "
                            "(7 KiB for the 6th), which steps uplink.heap_min_kib up; "
                            "docs/architecture.md, count",
    "uplink.heap_min_rom_kib": "the same with the application's bytecode from its ROMFS image "
                               "(deploy --romfs): smallest heap beyond the image, KiB",
    "uplink.drain_signed_events_per_s": "a 10,000-event backlog drained by a door with a "
                                        "command key: every ack's MAC checked (HMAC-SHA256), "
                                        "128K heap, events/s",
    "uplink.drain_unsigned_events_per_s": "baseline: the same backlog, a door without keys "
                                          "(acks unchecked), events/s",
    "uplink.overflow_recovery_s": "a 635-event ring overflowed (3,000 events, no platform): from "
                                  "the platform's start until every survivor is stored and the "
                                  "loss recorded as a gap (resend request, `gone`), s",
    "uplink.overflow_baseline_s": "baseline: as many events as survived there, from a larger "
                                  "ring that did not overflow, s",
}
OVERFLOW_BLOCKS = 8  # 6 data sectors of 127 records: 635 unacknowledged events at most


def _drain(tmp: Path, broker: Mosquitto, backlog: int = BACKLOG, heap: str = HEAP,
           device: str = "bench.dev", timeout: float | None = None,
           rom: Path | None = None, key: bytes | None = None,
           output: list[str] | None = None) -> float:
    """Seconds to drain `backlog` events; RuntimeError when the device cannot. With `rom`
    (a ROMFS image of the application), the device runs the application from it; with
    `key` (a command key), acks are signed and the device checks each one; `output` gets
    what the device printed."""
    env = micropython_env(build_device_tree()[0].parents[1])
    image = tmp / f"{device}.img"
    fill = subprocess.run(
        [micropython(), "-X", "heapsize=256K", str(DEVICE), str(image), str(BLOCKS), broker.host,
         "1", device, "1", str(backlog), "0", "fill-only"],
        env=env, cwd=tmp, capture_output=True, text=True, timeout=900)
    if "APPENDED" not in fill.stdout:
        raise RuntimeError(fill.stdout + fill.stderr)
    with Platform(Store(str(tmp / f"{device}.db")), broker.host, broker.port,
                  ack_key=key) as platform:
        platform.connected.wait(10)
        t = time.perf_counter()
        try:
            prelude = [str(WITH_ROM), str(rom)] if rom is not None else []
            signed = ["0", "key=" + key.hex()] if key is not None else []
            proc = subprocess.run(
                [micropython(), "-X", f"heapsize={heap}", *prelude, str(DEVICE), str(image),
                 str(BLOCKS), broker.host, str(broker.port), device, "2", "0", *signed],
                env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout or 60 + backlog / 100)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"drain did not finish with a {heap} heap") from None
        elapsed = time.perf_counter() - t
        if "DRAINED" not in proc.stdout or platform.store.count(device) != backlog:
            raise RuntimeError("drain incomplete: " + proc.stdout[-500:])
        if output is not None:
            output.append(proc.stdout)
    return elapsed


def _multi(tmp: Path, broker: Mosquitto) -> float:
    devices, backlog = MULTI_DEVICES, MULTI_BACKLOG
    env = micropython_env(build_device_tree()[0].parents[1])
    names = [f"multi.d{i}" for i in range(devices)]
    for name in names:
        subprocess.run([micropython(), "-X", "heapsize=256K", str(DEVICE), str(tmp / f"{name}.img"),
                        str(BLOCKS), broker.host, "1", name, "1", str(backlog), "0", "fill-only"],
                       env=env, cwd=tmp, capture_output=True, text=True, timeout=600, check=True)
    with Platform(Store(str(tmp / "multi.db")), broker.host, broker.port) as platform:
        platform.connected.wait(10)
        t = time.perf_counter()
        procs = [subprocess.Popen([micropython(), "-X", f"heapsize={HEAP}", str(DEVICE),
                                   str(tmp / f"{name}.img"), str(BLOCKS), broker.host,
                                   str(broker.port), name, "2", "0"], env=env, cwd=tmp,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name in names]
        for p in procs:
            p.wait(600)
        elapsed = time.perf_counter() - t
        if platform.store.count() != devices * backlog:
            raise RuntimeError("multi-device drain incomplete")
    return devices * backlog / elapsed


def _heap_min_kib(tmp: Path, broker: Mosquitto, rom: Path | None = None) -> float:
    """Smallest heap (8 KiB steps from 64) that drains 2,000 events; with `rom`, beyond the
    image (which sits in the heap on the unix port, standing in for memory-mapped flash)."""
    extra = math.ceil(rom.stat().st_size / 1024) if rom is not None else 0
    for kib in HEAPS_KIB:
        try:
            _drain(tmp, broker, HEAP_BACKLOG, f"{kib + extra}K", f"heap{kib}{'r' if rom else ''}",
                   timeout=30, rom=rom)
        except Exception:  # noqa: BLE001 - a drain that fails for any reason does not fit
            continue
        return float(kib)
    raise RuntimeError(f"the drain passes in no heap up to {max(HEAPS_KIB)} KiB")


def _qstr_headroom(tmp: Path, broker: Mosquitto) -> float:
    """Names the drained door could still intern before its next qstr pool (the pool that
    took uplink.heap_min_kib from 100 to 112 when the wire split passed 620 names)."""
    from host_tools.benchmarks.vdev import interpreter_first_pool, qstr_headroom, qstr_pools

    printed: list[str] = []
    _drain(tmp, broker, HEAP_BACKLOG, HEAP, "qstr.dev", output=printed)
    pools, names = qstr_pools(printed[0])[-1]
    return float(qstr_headroom(interpreter_first_pool(), pools, names))


def _recovery(tmp: Path, broker: Mosquitto, appended: int, name: str,
              blocks: int = OVERFLOW_BLOCKS) -> tuple[float, int]:
    """(seconds until the platform holds every event of a ring filled with `appended` events
    while no platform ran, or a gap for it; the events that survived on the door)."""
    env = micropython_env(build_device_tree()[0].parents[1])
    image = tmp / f"{name}.img"
    args = [micropython(), "-X", f"heapsize={HEAP}", str(DEVICE), str(image), str(blocks),
            broker.host, str(broker.port), name]
    fill = subprocess.run(args + ["1", str(appended), "0", "fill-only"], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=300)
    if "APPENDED" not in fill.stdout:
        raise RuntimeError(fill.stdout + fill.stderr)
    newest = int(fill.stdout.split("APPENDED")[-1].split()[0])
    with Platform(Store(str(tmp / f"{name}.db")), broker.host, broker.port) as platform:
        platform.connected.wait(10)
        t = time.perf_counter()
        proc = subprocess.run(args + ["2", "0"], env=env, cwd=tmp, capture_output=True, text=True,
                              timeout=300)
        elapsed = time.perf_counter() - t
        if "DRAINED" not in proc.stdout or platform.store.ack_upto(name) != newest:
            raise RuntimeError("recovery incomplete: " + proc.stdout[-500:])
        return elapsed, platform.store.count(name)


def _baseline(tmp: Path, broker: Mosquitto, batch: int = 16) -> float:
    n = BASELINE_EVENTS
    with Platform(Store(str(tmp / "b.db")), broker.host, broker.port) as platform:
        platform.connected.wait(10)
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
        pub.max_inflight_messages_set(64)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        t = time.perf_counter()
        for start in range(1, n + 1, batch):
            evs = [(s, 1, 1, s, 0, 0, 0, "") for s in range(start, min(start + batch, n + 1))]
            pub.publish(common.topic("bench.base", "events"), encode_events(1, evs), 1)
        while platform.store.ack_upto("bench.base") < n:
            time.sleep(0.01)
        elapsed = time.perf_counter() - t
        pub.loop_stop()
        pub.disconnect()
    return n / elapsed


def run(names: set[str]) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory() as tmp, Mosquitto() as broker:
        drain = ("uplink.drain_50k_s", "uplink.drain_events_per_s")
        with failing(out, *drain):
            if names & set(drain):
                s = _drain(Path(tmp), broker, BACKLOG)
                out["uplink.drain_50k_s"] = s
                out["uplink.drain_events_per_s"] = BACKLOG / s
        with failing(out, "platform.ingest_events_per_s"):
            if "platform.ingest_events_per_s" in names:
                out["platform.ingest_events_per_s"] = _multi(Path(tmp), broker)
        with failing(out, "uplink.heap_min_kib"):
            if "uplink.heap_min_kib" in names:
                out["uplink.heap_min_kib"] = _heap_min_kib(Path(tmp), broker)
        with failing(out, "uplink.qstr_headroom"):
            if "uplink.qstr_headroom" in names:
                out["uplink.qstr_headroom"] = _qstr_headroom(Path(tmp), broker)
        with failing(out, "uplink.heap_min_rom_kib"):
            if "uplink.heap_min_rom_kib" in names:
                rom = Path(tmp) / "app.romfs"
                rom.write_bytes(application_image(board_for("linux")))
                out["uplink.heap_min_rom_kib"] = _heap_min_kib(Path(tmp), broker, rom)
        signed = ("uplink.drain_signed_events_per_s", "uplink.drain_unsigned_events_per_s")
        with failing(out, *signed):
            if names & set(signed):
                # 128K for both: the key store's bytecode (AES, CMAC, diversification, loaded
                # for the cards on a door anyway) shares the unix port's heap.
                n = 10_000
                out["uplink.drain_signed_events_per_s"] = n / _drain(
                    Path(tmp), broker, n, "128K", device="bench.signed", key=bytes(range(32)))
                out["uplink.drain_unsigned_events_per_s"] = n / _drain(
                    Path(tmp), broker, n, "128K", device="bench.unsigned")
        recovery = ("uplink.overflow_recovery_s", "uplink.overflow_baseline_s")
        with failing(out, *recovery):
            if names & set(recovery):
                s, survivors = _recovery(Path(tmp), broker, 3000, "bench.overflow")
                out["uplink.overflow_recovery_s"] = s
                out["uplink.overflow_baseline_s"] = _recovery(Path(tmp), broker, survivors,
                                                              "bench.nooverflow", 16)[0]
        with failing(out, "uplink.baseline_events_per_s"):
            if "uplink.baseline_events_per_s" in names:
                out["uplink.baseline_events_per_s"] = _baseline(Path(tmp), broker)
    return out
