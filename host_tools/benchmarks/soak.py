"""The soak on the firmware image: a busy door's week, compressed, in a tight heap.

The 32-bit unix image (`doorctl build unix32`) runs a commissioned door with a 2,000-card
whitelist in HEAP, MQTT to mosquitto and the platform. Round after round: swipes through the
PN532 emulator (a resident's card granted, a stranger's refused, alternately), a signed
whitelist delta pushed by the platform, a broker restart the door must reconnect after, and
every few rounds a power cut (kill -9, boot again). At the end every event must be at the
platform exactly once, every decision among them, and nothing may have met a MemoryError.
A MemoryError the door recovered from (the card task, the door task, its patrol and the
uplink count them in the status: `card_out_of_memory`, `door_out_of_memory`,
`patrol_out_of_memory`, `uplink_out_of_memory`, and MQTT messages refused as `no_memory`;
read after every round and before every cut, summed over the boots) lets the soak go on but
still fails its claim: `image.soak_oom_recovered` says how many, and `image.soak_heap_kib` fails when
it is not 0 (the heap did not hold). One that stopped the firmware (its traceback in the
virtual board's stderr.log) stops the soak.
The door's own heap figure (status `heap_free`, after a collection) is read after every
swipe: its minimum is `image.soak_min_free_kib`.

The issue's size is a week of a busy door: at least 100,000 decisions, 200 whitelist updates,
200 broker reconnects and 50 power cuts. The next card is presented as soon as the door has
decided the one before (it releases the card right after the decision, and its status counts
decisions: a read cut short is presented again), not once the door's unlock or refusal
window is over: a card at a door still open is decided all the same, and the two cards'
UIDs differ, so each presentation is a decision at once (docs/card-profile.md). The door's
pause between polls after a card is READER's `poll_ms`. Each decision is then checked where
it is recorded: the n-th decision event at the platform, in the door's order, is the n-th
swipe's (the resident granted with its reference, the stranger refused, always for the same
reason), checked round by round and once more at the end. The run stops when all four sizes
are reached or after MINUTES, and reports what it did: the figures are counts, not targets met.
The heap is DOORCTL_SOAK_HEAP (KiB, e.g. 72 or 72K), else HEAP, the goal.
`tests/host/image/test_soak.py` runs a short one in the suite.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.benchmarks import Outcome, failing
from host_tools.benchmarks.image import DEVICE, Template
from host_tools.image.steps import Steps
from host_tools.image.unix32 import build_unix32
from host_tools.pn532_emu import EmulatorLink, LocalCard, PN532Emulator
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from offline_cache import fmt
from reference_platform.distribute import push
from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire import codes as ev
from wire.common import config_limits
from wire.names import deny_reason_name

DECISIONS = 100_000
UPDATES = 200
RECONNECTS = 200
CUTS = 50
MINUTES = 120.0  # the limit; the run ends earlier once all four sizes are reached
HEAP = "64K"  # the goal heap (image.heap_min_kib is the full workload's smallest)
HEAP_ENV = "DOORCTL_SOAK_HEAP"
CARDS = 2_000
LOST_PER_UPDATE = 20
# The suite's smoke run keeps a heap with room: it checks that the bench runs, not the heap.
SMOKE = {"DECISIONS": 4, "UPDATES": 1, "RECONNECTS": 1, "CUTS": 1, "MINUTES": 5.0, "CARDS": 200,
         "HEAP": "96K"}
# The door's timing in the soak, within what commissioning accepts (wire/common.py
# config_limits): no swipe waits for these windows to end.
DOOR = {"unlock_ms": 500, "prealarm_ms": 1500, "held_open_ms": 10_000, "deny_ms": 100}
# The card task's pause after a decision before it lists the field again (50 ms by default,
# docs/card-profile.md): a door whose next card comes 10 ms after a decision.
READER = {"poll_ms": 10}
SWIPE_TIMEOUT_S = 30.0
RELEASE_GRACE_S = 2.0  # a counted decision's release on its way (_swipe)

FIGURES = {
    "image.soak_decisions": "soak on the unix32 image: card decisions (granted and refused)",
    "image.soak_updates": "soak on the unix32 image: signed whitelist deltas installed",
    "image.soak_reconnects": "soak on the unix32 image: broker restarts the door reconnected after",
    "image.soak_cuts": "soak on the unix32 image: power cuts (kill -9, boot again)",
    "image.soak_min_free_kib": "soak on the unix32 image: smallest free heap the door reported "
                               "(after a collection), KiB",
    "image.soak_lost": "soak on the unix32 image: events missing at the platform (goal 0)",
    "image.soak_oom_recovered": "soak on the unix32 image: MemoryErrors the door recovered from "
                                "(the status's *_out_of_memory counts summed over the boots; "
                                "goal 0: any fails image.soak_heap_kib)",
    "image.soak_duplicated": "soak on the unix32 image: events stored twice (goal 0)",
    "image.soak_minutes": "soak on the unix32 image: duration, min",
    "image.soak_heap_kib": "soak on the unix32 image: the heap it ran in (-X heapsize; "
                           "DOORCTL_SOAK_HEAP, else the goal), KiB; fails when the door "
                           "met a MemoryError in it, even one it recovered from",
    "image.soak_swipe_ms": "soak on the unix32 image: mean time per decision, card presented "
                           "to the next one (the door's pause after a card READER poll_ms "
                           "included), ms",
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
    swipe_seconds: float = 0.0  # presenting cards until decided, rounds' other steps apart
    checked: int = 0  # decisions checked one by one at the platform
    cut_short: int = 0  # card_lost refusals at the platform: reads the door made again
    seqs: list[int] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    last_seq: int = 0
    out_of_memory: bool = False  # a MemoryError stopped the firmware
    recovered: dict[str, int] = field(default_factory=dict)  # status key -> count, all boots
    alive: bool = False

    @property
    def oom_recovered(self) -> int:
        """MemoryErrors the door recovered from: each still fails the soak's claim."""
        return sum(self.recovered.values())

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
    st = io.status("uplink", "clock_synced")
    return st.get("uplink") == "connected" and (not clock or bool(st.get("clock_synced")))


def heap_option(environ: dict[str, str] | None = None) -> str:
    """The soak's heap: DOORCTL_SOAK_HEAP in KiB ("72" or "72K"), else HEAP."""
    value = (os.environ if environ is None else environ).get(HEAP_ENV, "").strip()
    if not value:
        return HEAP
    found = re.fullmatch(r"(\d+)[kK]?", value)
    if found is None or not 16 <= int(found.group(1)) <= 4096:
        raise SoakFailed(f"{HEAP_ENV}={value!r}: give the heap in KiB, 16-4096 (e.g. 72 or 72K)")
    return f"{int(found.group(1))}K"


def check_door_config() -> None:
    """The soak's door timings are ones commissioning accepts."""
    for key, value in DOOR.items():
        lo, hi = config_limits(key)
        if not lo <= value <= hi:
            raise SoakFailed(f"the soak's door timing {key}={value} is outside {lo}-{hi}")


class ReleaseWatch(PN532Emulator):
    """The PN532 emulator, counting InRelease: the door releases the card right after it
    handed its decision to the door, or after a read cut short (card_lost). Each release keeps
    the UID of the card it released, so a swipe credits only a decision on its own card."""

    def __init__(self) -> None:
        super().__init__()
        self.released: list[bytes | None] = []  # the UID each release let go, in order
        self._released = threading.Condition()

    @property
    def releases(self) -> int:
        return len(self.released)

    def _release(self, params: bytes) -> bytes | None:
        uid = next((bytes(c.uid) for c in self._active.values() if hasattr(c, "uid")), None)
        out = super()._release(params)
        with self._released:
            self.released.append(uid)
            self._released.notify_all()
        return out

    def wait_release(self, after: int, timeout_s: float) -> bool:
        """Whether a release beyond the first `after` came within `timeout_s`."""
        with self._released:
            return self._released.wait_for(lambda: self.releases > after, max(0.0, timeout_s))

    def released_since(self, after: int) -> list[bytes | None]:
        with self._released:
            return list(self.released[after:])


STUCK_COMMANDS = 12  # the emulator's last commands a stuck swipe's message shows


def stuck_swipe_detail(io: VirtualIO, emu: ReleaseWatch, first: int,
                       link: EmulatorLink | None = None) -> str:
    """What a swipe without a decision adds to its message: the releases since the card was
    presented (and whose), the reader's last commands (only InListPassiveTarget, 4A, is a door
    alive and waiting for the field to empty), the reader link's state and the door's own
    count and reader state. Each part is best effort: the message is the soak's."""
    uids = [u.hex() if u is not None else "none" for u in emu.released_since(first)]
    parts = [f"releases since presented {len(uids)}" + (f" ({', '.join(uids[-5:])})" if uids else ""),
             "reader's last commands " + (" ".join(f"{c:02X}" for c in emu.commands[-STUCK_COMMANDS:])
                                          or "none")]
    if link is not None:
        parts.append("reader link " + ("closed" if link.closed.is_set() else "open") +
                     (f" ({link.error!r})" if link.error is not None else ""))
    if emu.errors:
        parts.append(f"emulator errors {len(emu.errors)} (last {emu.errors[-1]})")
    try:
        st = io.status("decisions", "reader")
        parts.append(f"door: decisions {st.get('decisions')}, reader {st.get('reader')}")
    except Exception as e:  # noqa: BLE001 - the door's state is a detail of the message
        parts.append(f"door status unreadable ({type(e).__name__})")
    return "; ".join(parts)


def _swipe(io: VirtualIO, emu: ReleaseWatch, card: LocalCard, decided: int,
           link: EmulatorLink | None = None) -> dict[str, object]:
    """Present the card until the door has decided it (its status counts `decided` + 1, and
    the card was released since it was presented); returns that status. A release without a
    decision was a read cut short: the card stays and the door reads it again. A count that
    grew while only another card was released may be this card's decision with its release
    still on the way (the door answers its status between deciding and releasing): it gets
    RELEASE_GRACE_S. Past that, it was the card before decided again: the door now holds this
    one as the one it decided (it waits for an empty field, which never comes), so it fails
    at once, saying so."""
    first = seen = emu.releases
    emu.present(card)
    deadline = time.monotonic() + SWIPE_TIMEOUT_S
    counted_by: float | None = None  # the count grew, this card not released yet: wait until
    while True:
        until = deadline if counted_by is None else min(deadline, counted_by)
        released = emu.wait_release(seen, until - time.monotonic())
        if not released and counted_by is not None and time.monotonic() >= counted_by:
            raise SoakFailed("a decision counted while only the card before was released: "
                             "the card before decided again, this one not at all ("
                             f"{stuck_swipe_detail(io, emu, first, link)})")
        if not released:
            raise SoakFailed(f"no decision within {SWIPE_TIMEOUT_S:.0f} s ("
                             f"{stuck_swipe_detail(io, emu, first, link)})")
        seen = emu.releases
        st = io.status("decisions", "heap_free")
        n = int(st.get("decisions", 0))
        if n == decided + 1:
            if bytes(card.uid) in emu.released_since(first):
                return st
            if counted_by is None:
                counted_by = time.monotonic() + RELEASE_GRACE_S
        if n > decided + 1:
            raise SoakFailed(f"one presentation decided {n - decided} times")


CARD_LOST_REFUSAL = ev.deny_code("card_lost")


class Decisions:
    """The decision events at the platform, in the door's order, against the swipes: the
    n-th is the n-th swipe's, granted with the resident's reference when n is even, else
    refused, every refusal for the first one's reason. Checks what is stored without a gap
    (up to the platform's ack), from where the last check ended. A read cut short (a refusal
    for card_lost: the reader's answer came late) is journaled but is no decision (the door
    reads the card again and does not count it, firmware/card_task.py): counted apart."""

    def __init__(self, platform: Platform, resident_ref: bytes) -> None:
        self.platform = platform
        self.resident_ref = bytes(resident_ref)
        self.checked_seq = 0
        self.count = 0
        self.cut_short = 0
        self.deny_reason: int | None = None

    def check(self) -> None:
        store = self.platform.store
        upto = store.ack_upto(DEVICE)
        rows = store.rows("SELECT seq, code, arg, data FROM events WHERE device=? AND seq>? "
                          "AND seq<=? AND code IN (?, ?) ORDER BY seq",
                          (DEVICE, self.checked_seq, upto, ev.ACCESS_GRANTED, ev.ACCESS_DENIED))
        for seq, code, arg, data in rows:
            if code == ev.ACCESS_DENIED and int(arg) == CARD_LOST_REFUSAL:
                self.cut_short += 1
                continue
            granted = self.count % 2 == 0
            who = "resident" if granted else "stranger"
            if granted and code != ev.ACCESS_GRANTED:
                raise SoakFailed(f"decision {self.count + 1} (event {seq}): the resident was "
                                 f"refused ({deny_reason_name(int(arg))})")
            if not granted and code != ev.ACCESS_DENIED:
                raise SoakFailed(f"decision {self.count + 1} (event {seq}): the stranger was "
                                 "let in")
            if granted and str(data) != self.resident_ref.hex():  # the store keeps hex
                raise SoakFailed(f"decision {self.count + 1} (event {seq}): granted with "
                                 "another reference than the resident's")
            if not granted:
                if self.deny_reason is None:
                    self.deny_reason = int(arg)
                elif int(arg) != self.deny_reason:
                    raise SoakFailed(
                        f"decision {self.count + 1} (event {seq}): the {who} was refused for "
                        f"{deny_reason_name(int(arg))}, before for "
                        f"{deny_reason_name(self.deny_reason)}")
            self.count += 1
        self.checked_seq = max(self.checked_seq, upto)


OOM_SUFFIX = "_out_of_memory"  # status counts of steps cut short by a MemoryError and recovered
# Asked for by name: the whole status (its patrol report among it) is a reply the door's I/O
# channel may not find the heap to encode in a tight heap (416 bytes at 76K).
OOM_KEYS = ("card_out_of_memory", "door_out_of_memory", "patrol_out_of_memory",
            "uplink_out_of_memory", "refused")
NO_MEMORY = "no_memory"  # an inbound message refused for want of heap (status "refused")


def recovered_now(status: dict[str, object]) -> dict[str, int]:
    """The status's counts of MemoryErrors recovered from, this boot (`*_out_of_memory`, and
    the inbound messages refused as `no_memory`)."""
    found = {k: int(str(v)) for k, v in status.items() if k.endswith(OOM_SUFFIX) and v}
    refused = status.get("refused")
    if isinstance(refused, dict) and refused.get(NO_MEMORY):
        found["refused_" + NO_MEMORY] = int(refused[NO_MEMORY])
    return found


class Recovered:
    """The recovered MemoryErrors over the boots: a boot's counts grow until a power cut
    starts them again from 0, so each boot's last reading is added when it ends."""

    def __init__(self) -> None:
        self.total: dict[str, int] = {}
        self._boot: dict[str, int] = {}

    def seen(self, status: dict[str, object]) -> None:
        for k, v in recovered_now(status).items():
            self._boot[k] = max(self._boot.get(k, 0), v)

    def boot_ended(self) -> None:
        for k, v in self._boot.items():
            self.total[k] = self.total.get(k, 0) + v
        self._boot = {}


def recovered_meanwhile(io: VirtualIO) -> str:
    """What a stuck swipe's message adds: the MemoryErrors this boot recovered from (a card
    task that meets one at every read never decides; 72K, 3 December), if any."""
    try:
        counts = recovered_now(io.status(*OOM_KEYS))
    except Exception:  # noqa: BLE001 - the message is the soak's, the door's state a detail
        return ""
    if not counts:
        return ""
    return "; the door recovered from MemoryErrors meanwhile (" + ", ".join(
        f"{k} {v}" for k, v in sorted(counts.items())) + ")"


def _memory_error(state: Path) -> str | None:
    """The MemoryError that stopped the firmware (its traceback in the virtual board's
    stderr.log), if one did. The door's log lines about one it recovered from are not it."""
    err = state / "stderr.log"
    log = err.read_bytes() if err.exists() else b""
    lines = log.decode(errors="replace").splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if "MemoryError" in lines[i]:
            where = lines[i - 1].strip() if i and lines[i - 1].strip().startswith("File ") else ""
            return (lines[i].strip() + (f" at {where}" if where else ""))[-300:]
    return None


def _keep_logs(state: Path, console: bytes | None = None) -> Path:
    """The door's console.log and stderr.log, copied out of the soak's temporary folder (gone
    when the soak ends), for whoever has to find out why it stopped. `console`: the console
    output the device holds in memory (written to console.log only when asked for its last
    error), kept in its place."""
    kept = Path(tempfile.mkdtemp(prefix="doorctl-soak-"))
    if console is not None:
        (kept / "console.log").write_bytes(console)
    for name in ("stderr.log",) if console is not None else ("console.log", "stderr.log"):
        if (state / name).exists():
            shutil.copy(state / name, kept / name)
    return kept


def _recovered_lines(console: bytes | bytearray, keep: int = 3) -> str:
    """The door's last log lines about heap it did not find (MemoryErrors it recovered from,
    messages refused no_memory), the latest `keep`, joined: "" when there were none."""
    lines = [line.strip() for line in bytes(console).decode(errors="replace").splitlines()
             if "MemoryError" in line or NO_MEMORY in line or "out of memory" in line]
    return " | ".join(lines[-keep:])[-600:]


def soak(tmp: Path, binary: str, heap: str = HEAP, decisions: int = DECISIONS,
         updates: int = UPDATES, reconnects: int = RECONNECTS, cuts: int = CUTS,
         minutes: float = MINUTES, cards: int = CARDS) -> SoakReport:
    """Run the soak; the report holds what happened, SoakFailed when the door got stuck."""
    check_door_config()
    report = SoakReport(heap=heap)
    rounds = max(updates, reconnects, cuts, 1)
    per_round = max(1, -(-decisions // rounds))
    cut_every = max(1, rounds // max(cuts, 1))
    start = time.monotonic()
    deadline = start + minutes * 60

    def heap_seen(st: dict[str, object]) -> None:
        free = int(str(st.get("heap_free", 0)))
        if free and (report.min_free is None or free < report.min_free):
            report.min_free = free

    with Mosquitto() as broker:
        template = Template(tmp, broker, cards=cards, backlog=0, door=DOOR, reader=READER)
        resident = LocalCard(template.resident.process, template.resident.uid)
        stranger = LocalCard(template.stranger.process, template.stranger.uid)
        state = template.copy(tmp / "door")
        broker.restart()
        with Platform(Store(str(tmp / "soak.db")), broker.host, broker.port,
                      **template.platform_kw) as platform:
            platform.cache_key = template.site.cache_key
            platform.connected.wait(10)
            checks = Decisions(platform, template.resident_ref)
            recovered = Recovered()
            dev = VirtualDevice(state, heap=heap, image="unix32")
            dev._binary = binary
            version = 2
            try:
                dev.start()
                round_no = 0
                while time.monotonic() < deadline and not (
                        report.decisions >= decisions and report.updates >= updates
                        and report.reconnects >= reconnects and report.cuts >= cuts):
                    emu = ReleaseWatch()
                    with emu.connect(dev.reader_addr) as link, VirtualIO(dev.io_addr) as io:
                        _wait(lambda: _online(io, clock=True), 60, "the uplink and the time")
                        decided = int(io.status("decisions").get("decisions", 0))  # since this boot
                        t0 = time.monotonic()
                        for _ in range(per_round if report.decisions < decisions else 0):
                            granted = report.decisions % 2 == 0
                            try:
                                st = _swipe(io, emu, resident if granted else stranger, decided,
                                            link)
                            except SoakFailed as e:
                                raise SoakFailed(f"decision {report.decisions + 1} (the "
                                                 f"{'resident' if granted else 'stranger'}): "
                                                 f"{e}{recovered_meanwhile(io)}") from None
                            heap_seen(st)
                            decided += 1
                            report.decisions += 1
                            report.grants += granted
                        emu.remove()
                        report.swipe_seconds += time.monotonic() - t0
                        checks.check()  # what reached the platform so far
                        if report.updates < updates:
                            version += 1
                            base = 1_000_000 + LOST_PER_UPDATE * report.updates
                            lost = [((base + k).to_bytes(8, "big"), fmt.LOST, False)
                                    for k in range(LOST_PER_UPDATE)]
                            push(platform, DEVICE, template.site.delta(version, version - 1, lost),
                                 timeout=60, key=template.site.cache_key)
                            report.updates += 1
                        heap_seen(io.status("heap_free"))
                        if report.reconnects < reconnects:
                            broker.restart()  # an outage: the door reconnects by itself
                            _wait(lambda: _online(io), 60, "a reconnect")
                            report.reconnects += 1
                        recovered.seen(io.status(*OOM_KEYS))  # this boot's counts so far
                    round_no += 1
                    if report.cuts < cuts and round_no % cut_every == 0:
                        recovered.boot_ended()
                        dev.kill()  # a power cut
                        dev.restart()
                        report.cuts += 1
                with VirtualIO(dev.io_addr) as io:
                    _wait(lambda: io.status("uplink").get("uplink") == "connected", 60,
                          "the uplink")

                    def all_decisions() -> bool:
                        checks.check()
                        return checks.count >= report.decisions

                    _wait(all_decisions, 120, "every decision at the platform")
                    time.sleep(1.0)  # the status's journal figures are refreshed every 500 ms
                    report.last_seq = int(io.status("last_seq")["last_seq"])
                    _wait(lambda: platform.store.ack_upto(DEVICE) >= report.last_seq, 120,
                          "every event stored")
                    _wait(lambda: io.status("journal_depth").get("journal_depth") == 0, 60,
                          "the journal emptied")
                    checks.check()
                    report.checked = checks.count
                    report.cut_short = checks.cut_short
                    last = io.status("ready", *OOM_KEYS)
                    recovered.seen(last)
                    report.alive = bool(last["ready"])
            except Exception as e:
                # Stuck: say how far the soak got, and why if the door ran out of memory (a
                # MemoryError that stopped it, or ones it recovered from: a whitelist piece
                # refused no_memory reads as an incomplete transfer at the platform).
                dev.stop()
                progress = (f"after {report.decisions} decisions, {report.updates} updates, "
                            f"{report.reconnects} reconnects, {report.cuts} cuts"
                            f" (the door's logs kept in {_keep_logs(state, bytes(dev.console_log))})")
                found = _memory_error(state)
                if found is not None:
                    raise SoakFailed(f"the door met a MemoryError in a {heap} heap {progress} "
                                     f"({found}); the soak then saw: {type(e).__name__}: {e}"
                                     ) from None
                recovered_lines = _recovered_lines(dev.console_log)
                raise SoakFailed(f"{type(e).__name__}: {e}, in a {heap} heap {progress}"
                                 + (f"; the door recovered from: {recovered_lines}"
                                    if recovered_lines else "")) from None
            finally:
                dev.stop()
                recovered.boot_ended()
                report.recovered = recovered.total
                report.out_of_memory = _memory_error(state) is not None
            events = platform.store.events(DEVICE)
            report.seqs = [e[0] for e in events]
            report.codes = [e[1] for e in events]
    report.seconds = time.monotonic() - start
    return report


def heap_held(r: SoakReport) -> Outcome:
    """The heap the soak ran in, or why it did not hold: a recovered MemoryError is one."""
    if r.oom_recovered:
        which = ", ".join(f"{k} {v}" for k, v in sorted(r.recovered.items()))
        return SoakFailed(f"the {r.heap} heap did not hold: the door recovered from "
                          f"{r.oom_recovered} MemoryError(s) ({which}); the other figures "
                          "are the run's")
    return int(r.heap.rstrip("K"))


def run(names: set[str]) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    with failing(out, *FIGURES), tempfile.TemporaryDirectory() as tmp:
        heap = heap_option()  # first: a bad option costs no build
        binary = str(build_unix32(Steps(quiet=True)).binary)
        r = soak(Path(tmp), binary, heap, DECISIONS, UPDATES, RECONNECTS, CUTS, MINUTES, CARDS)
        if r.out_of_memory:
            raise SoakFailed(f"a MemoryError stopped the door in a {r.heap} heap")
        if r.counts(ev.ACCESS_GRANTED) != r.grants or \
                r.counts(ev.ACCESS_DENIED) - r.cut_short != r.decisions - r.grants or \
                r.checked != r.decisions:
            raise SoakFailed("the platform's decision events do not match the swipes")
        out.update({
            "image.soak_decisions": r.decisions, "image.soak_updates": r.updates,
            "image.soak_reconnects": r.reconnects, "image.soak_cuts": r.cuts,
            "image.soak_min_free_kib": (r.min_free or 0) / 1024,
            "image.soak_lost": r.lost, "image.soak_duplicated": r.duplicated,
            "image.soak_minutes": r.seconds / 60,
            "image.soak_oom_recovered": r.oom_recovered,
            "image.soak_heap_kib": heap_held(r),
            "image.soak_swipe_ms": r.swipe_seconds * 1000 / max(r.decisions, 1),
        })
    return out
