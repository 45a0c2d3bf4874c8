"""The soak on the firmware image: a busy door's week, compressed, in a tight heap.

The 32-bit unix image (`doorctl build unix32`) runs a commissioned door with a 2,000-card
whitelist in HEAP, MQTT to mosquitto and the platform. Round after round: swipes through the
PN532 emulator (a resident's card granted, a stranger's refused, alternately), a signed
whitelist delta pushed by the platform, a broker restart the door must reconnect after, and
every few rounds a power cut (kill -9, boot again). At the end every event must be at the
platform exactly once, every decision among them, and nothing may have met a MemoryError.
The door's own heap figure (status `heap_free`, after a collection) is read after every
round: its minimum is `image.soak_min_free_kib`.

The issue's size is a week of a busy door: at least 100,000 decisions, 200 whitelist updates,
200 broker reconnects and 50 power cuts (about 10 hours on two cores: the door is timed as in
the field, each decision waits for the door to be idle again). The run stops when all four
are reached or after MINUTES, and reports what it did: the figures are counts, not targets met.
`tests/host/image/test_soak.py` runs a short one in the suite.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.benchmarks import Outcome, failing
from host_tools.benchmarks.image import DEVICE, Template
from host_tools.image.steps import Steps
from host_tools.image.unix32 import build_unix32
from host_tools.pn532_emu import LocalCard, PN532Emulator
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from offline_cache import fmt
from reference_platform.distribute import push
from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire import codes as ev
from wire.names import deny_reason_name

DECISIONS = 100_000
UPDATES = 200
RECONNECTS = 200
CUTS = 50
MINUTES = 60.0  # the limit; the run ends earlier once all four sizes are reached
HEAP = "96K"  # image.heap_min_kib is the full workload's smallest heap; this one has margin
CARDS = 2_000
LOST_PER_UPDATE = 20
SMOKE = {"DECISIONS": 4, "UPDATES": 1, "RECONNECTS": 1, "CUTS": 1, "MINUTES": 5.0, "CARDS": 200}
# The door's timing in the soak: short windows so decisions follow each other quickly.
DOOR = {"unlock_ms": 300, "prealarm_ms": 1500, "held_open_ms": 10_000, "deny_ms": 100}

FIGURES = {
    "image.soak_decisions": "soak on the unix32 image: card decisions (granted and refused)",
    "image.soak_updates": "soak on the unix32 image: signed whitelist deltas installed",
    "image.soak_reconnects": "soak on the unix32 image: broker restarts the door reconnected after",
    "image.soak_cuts": "soak on the unix32 image: power cuts (kill -9, boot again)",
    "image.soak_min_free_kib": "soak on the unix32 image: smallest free heap the door reported "
                               "(after a collection), KiB",
    "image.soak_lost": "soak on the unix32 image: events missing at the platform (goal 0)",
    "image.soak_duplicated": "soak on the unix32 image: events stored twice (goal 0)",
    "image.soak_minutes": "soak on the unix32 image: duration, min",
}


class SoakFailed(RuntimeError):
    """The door did not get through the soak (a timeout, a refusal, a crash)."""


@dataclass
class SoakReport:
    heap: str
    decisions: int = 0
    grants: int = 0
    updates: int = 0
    reconnects: int = 0
    cuts: int = 0
    min_free: int | None = None  # bytes
    seconds: float = 0.0
    seqs: list[int] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    last_seq: int = 0
    out_of_memory: bool = False
    alive: bool = False

    @property
    def duplicated(self) -> int:
        return len(self.seqs) - len(set(self.seqs))

    @property
    def lost(self) -> int:
        """Sequence numbers missing between the first stored event and the door's last."""
        if not self.seqs:
            return self.last_seq
        have = set(self.seqs)
        return sum(1 for s in range(min(have), max(self.last_seq, max(have)) + 1) if s not in have)

    def counts(self, code: int) -> int:
        return self.codes.count(code)


def _wait(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SoakFailed(f"timed out waiting for {what}")
        time.sleep(0.02)


def _online(io: VirtualIO, clock: bool = False) -> bool:
    st = io.status()
    return st.get("uplink") == "connected" and (not clock or bool(st.get("clock_synced")))


def _swipe(io: VirtualIO, emu: PN532Emulator, card: LocalCard) -> bool:
    """Present the card until the door decides; True when it opened. Waits for the door to be
    idle first, so each presentation is one decision."""
    _wait(lambda: io.state()["outputs"].get("led") in ("off", "amber")
          and not io.state()["outputs"].get("relay"), 30, "the door idle")
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

    try:
        _wait(decided, 30, "a decision")
    finally:
        emu.remove()
    return found[0]


def _why(platform: Platform, denials: int) -> str:
    """The reason of a refusal that should have been a grant, once it reaches the platform."""
    if not denials:
        return ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        refused = [e for e in platform.store.events(DEVICE) if e[1] == ev.ACCESS_DENIED]
        if len(refused) >= denials:
            return f" ({deny_reason_name(int(refused[-1][6]))})"
        time.sleep(0.2)
    return " (its reason did not reach the platform)"


def soak(tmp: Path, binary: str, heap: str = HEAP, decisions: int = DECISIONS,
         updates: int = UPDATES, reconnects: int = RECONNECTS, cuts: int = CUTS,
         minutes: float = MINUTES, cards: int = CARDS) -> SoakReport:
    """Run the soak; the report holds what happened, SoakFailed when the door got stuck."""
    report = SoakReport(heap=heap)
    rounds = max(updates, reconnects, cuts, 1)
    per_round = max(1, -(-decisions // rounds))
    cut_every = max(1, rounds // max(cuts, 1))
    start = time.monotonic()
    deadline = start + minutes * 60
    with Mosquitto() as broker:
        template = Template(tmp, broker, cards=cards, backlog=0, door=DOOR)
        resident = LocalCard(template.resident.process, template.resident.uid)
        stranger = LocalCard(template.stranger.process, template.stranger.uid)
        state = template.copy(tmp / "door")
        broker.restart()
        with Platform(Store(str(tmp / "soak.db")), broker.host, broker.port,
                      **template.platform_kw) as platform:
            platform.cache_key = template.site.cache_key
            platform.connected.wait(10)
            dev = VirtualDevice(state, heap=heap, image="unix32")
            dev._binary = binary
            version = 2
            try:
                dev.start()
                round_no = 0
                while time.monotonic() < deadline and not (
                        report.decisions >= decisions and report.updates >= updates
                        and report.reconnects >= reconnects and report.cuts >= cuts):
                    emu = PN532Emulator()
                    with emu.connect(dev.reader_addr), VirtualIO(dev.io_addr) as io:
                        _wait(lambda: _online(io, clock=True), 60, "the uplink and the time")
                        for _ in range(per_round if report.decisions < decisions else 0):
                            granted = report.decisions % 2 == 0
                            if _swipe(io, emu, resident if granted else stranger) != granted:
                                raise SoakFailed(f"decision {report.decisions + 1}: the "
                                                 f"{'resident' if granted else 'stranger'} was "
                                                 f"{'refused' if granted else 'let in'}"
                                                 + _why(platform, report.decisions - report.grants
                                                        + 1 if granted else 0))
                            report.decisions += 1
                            report.grants += granted
                        if report.updates < updates:
                            version += 1
                            base = 1_000_000 + LOST_PER_UPDATE * report.updates
                            lost = [((base + k).to_bytes(8, "big"), fmt.LOST, False)
                                    for k in range(LOST_PER_UPDATE)]
                            push(platform, DEVICE, template.site.delta(version, version - 1, lost),
                                 timeout=60, key=template.site.cache_key)
                            report.updates += 1
                        free = int(io.status().get("heap_free", 0))
                        if free and (report.min_free is None or free < report.min_free):
                            report.min_free = free
                        if report.reconnects < reconnects:
                            broker.restart()  # an outage: the door reconnects by itself
                            _wait(lambda: _online(io), 60, "a reconnect")
                            report.reconnects += 1
                    round_no += 1
                    if report.cuts < cuts and round_no % cut_every == 0:
                        dev.kill()  # a power cut
                        dev.restart()
                        report.cuts += 1
                with VirtualIO(dev.io_addr) as io:
                    _wait(lambda: io.status().get("uplink") == "connected", 60, "the uplink")
                    report.last_seq = int(io.status()["last_seq"])
                    _wait(lambda: platform.store.ack_upto(DEVICE) >= report.last_seq, 120,
                          "every event stored")
                    _wait(lambda: io.status().get("journal_depth") == 0, 60, "the journal emptied")
                    report.alive = bool(io.status()["ready"])
            finally:
                dev.stop()
                log = bytes(dev.console_log)
                err = state / "stderr.log"
                if err.exists():
                    log += err.read_bytes()
                report.out_of_memory = b"MemoryError" in log or b"out of memory" in log
            events = platform.store.events(DEVICE)
            report.seqs = [e[0] for e in events]
            report.codes = [e[1] for e in events]
    report.seconds = time.monotonic() - start
    return report


def run(names: set[str]) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    with failing(out, *FIGURES), tempfile.TemporaryDirectory() as tmp:
        binary = str(build_unix32(Steps(quiet=True)).binary)
        r = soak(Path(tmp), binary, HEAP, DECISIONS, UPDATES, RECONNECTS, CUTS, MINUTES, CARDS)
        if r.out_of_memory:
            raise SoakFailed(f"the door met a MemoryError in a {r.heap} heap")
        if r.counts(ev.ACCESS_GRANTED) != r.grants or \
                r.counts(ev.ACCESS_DENIED) != r.decisions - r.grants:
            raise SoakFailed("the platform's decision events do not match the swipes")
        out.update({
            "image.soak_decisions": r.decisions, "image.soak_updates": r.updates,
            "image.soak_reconnects": r.reconnects, "image.soak_cuts": r.cuts,
            "image.soak_min_free_kib": (r.min_free or 0) / 1024,
            "image.soak_lost": r.lost, "image.soak_duplicated": r.duplicated,
            "image.soak_minutes": r.seconds / 60,
        })
    return out
