"""A short soak of the firmware image (32-bit unix build, `doorctl build unix32`) in a tight
heap: decisions, whitelist deltas, broker outages and power cuts, round after round; every
event reaches the platform exactly once and nothing runs out of memory. The heap figures
under the full workload are `doorctl bench image.*` (host_tools/benchmarks/image.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware import events as ev
from host_tools.benchmarks.image import DEVICE, Template
from host_tools.image.source import vendored_tarball
from host_tools.platform.distribute import push
from host_tools.platform.ingest import Platform
from host_tools.platform.store import Store
from host_tools.pn532_emu import LocalCard, PN532Emulator
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from offline_cache import fmt

pytestmark = pytest.mark.skipif(not (os.environ.get("MICROPY_SRC") or vendored_tarball()),
                                reason="no MicroPython v1.28.0 source here")
HEAP = "96K"  # the full workload's smallest heap is image.heap_min_kib; this soak's is smaller
ROUNDS = 3
SWIPES = 8


def _wait(cond: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _swipe(io: VirtualIO, emu: PN532Emulator, card: LocalCard) -> bool:
    _wait(lambda: io.state()["outputs"].get("led") in ("off", "amber"), what="the door idle")
    mark = io.set_input("rex", False)
    emu.present(card)
    found: list[bool] = []

    def decided() -> bool:
        for e in io.outputs():
            if e.device_ms >= mark and ((e.name == "relay" and e.value is True)
                                        or (e.name == "led" and e.value == "red")):
                found.append(e.name == "relay")
                return True
        return False

    _wait(decided, what="a decision")
    emu.remove()
    return found[0]


def test_short_soak_on_the_image(tmp_path: Path, unix32_binary: Path) -> None:
    with Mosquitto() as broker:
        template = Template(tmp_path, broker, cards=2000, backlog=0)
        resident = LocalCard(template.resident.process, template.resident.uid)
        stranger = LocalCard(template.stranger.process, template.stranger.uid)
        state = template.copy(tmp_path / "door")
        broker.restart()
        with Platform(Store(str(tmp_path / "platform.db")), broker.host, broker.port,
                      **template.platform_kw) as platform:
            platform.cache_key = template.site.cache_key
            platform.connected.wait(10)
            dev = VirtualDevice(state, heap=HEAP, image="unix32")
            dev._binary = str(unix32_binary)
            decisions = 0
            try:
                dev.start()
                for round_no in range(ROUNDS):
                    emu = PN532Emulator()
                    with emu.connect(dev.reader_addr), VirtualIO(dev.io_addr) as io:
                        _wait(lambda io=io: io.status().get("uplink") == "connected"
                              and io.status().get("clock_synced"), 60, "the uplink and the time")
                        for i in range(SWIPES):
                            assert _swipe(io, emu, resident if i % 2 == 0 else stranger) == (i % 2 == 0)
                            decisions += 1
                        version = 3 + round_no
                        lost = [((10_000 + 100 * round_no + k).to_bytes(8, "big"), fmt.LOST, False)
                                for k in range(50)]
                        push(platform, DEVICE, template.site.delta(version, version - 1, lost), timeout=60,
                             key=template.site.cache_key)
                        broker.restart()  # a broker outage: the door reconnects by itself
                        _wait(lambda io=io: io.status().get("uplink") == "connected", 60, "a reconnect")
                    dev.kill()  # a power cut
                    dev.restart()
                with VirtualIO(dev.io_addr) as io:
                    _wait(lambda: io.status().get("uplink") == "connected", 60, "the uplink")
                    last = int(io.status()["last_seq"])
                    _wait(lambda: platform.store.ack_upto(DEVICE) >= last, 60, "every event stored")
                    # ... and acknowledged: the door's journal holds nothing unsent.
                    _wait(lambda: io.status().get("journal_depth") == 0, 60, "the journal emptied")
                    alive = io.status()["ready"]
            finally:
                dev.stop()
            seqs = [e[0] for e in platform.store.events(DEVICE)]
            assert seqs == sorted(set(seqs)), "an event reached the platform twice"
            assert seqs == list(range(seqs[0], seqs[-1] + 1)) and seqs[-1] >= last, "an event is missing"
            codes = [e[1] for e in platform.store.events(DEVICE)]
            assert codes.count(ev.ACCESS_GRANTED) == ROUNDS * SWIPES // 2
            assert codes.count(ev.ACCESS_DENIED) == ROUNDS * SWIPES // 2
            assert codes.count(ev.BOOT) >= ROUNDS
            assert alive and decisions == ROUNDS * SWIPES
            log = bytes(dev.console_log) + (state / "stderr.log").read_bytes()
            assert b"MemoryError" not in log
