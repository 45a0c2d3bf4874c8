"""A torture run: two doors, mosquitto, a TCP fault proxy, `doorctl platform run` and a hostile
publisher, driven by a seeded schedule (plan.py), judged at the end (check.py).

The doors: the virtual door (real MicroPython firmware, simulated NOR flash, a valid card
swiped through the PN532 emulator) and a small-ring door (the firmware's journal and uplink on
an 8-sector flash, appending an event every few ms), whose ring a long outage overflows. Both
are commissioned: only the platform's signed acknowledgements free their journals. Every
power cut is a SIGKILL of the door's process; the small-ring door may instead be torn at its
n-th flash program or erase.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from board.virtual import CUT_FILE
from host_tools.cards import sitekeys
from host_tools.cards.kit import SiteKit
from host_tools.journal_image import bounds as journal_bounds
from host_tools.mpy_build import build_device_tree
from host_tools.netfault import FaultProxy
from host_tools.paths import REPO_ROOT, micropython, micropython_env
from host_tools.pn532_emu import PN532Emulator
from host_tools.services.mosquitto import Mosquitto
from host_tools.torture.check import DoorVerdict, verdict
from host_tools.torture.hostile import Hostile
from host_tools.torture.plan import Action, make_plan
from host_tools.vdev.device import VirtualDevice, selected_image, unix32_binary
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import provision
from host_tools.vdev.swipe import swipe_local
from reference_platform.cards import CardRegistry
from reference_platform.commands import command_key
from reference_platform.distribute import sync
from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire.common import SITE_TZ_MIN

DOOR = "torture.b1.d0"  # the virtual door
RING = "torture.b1.d1"  # the small-ring door
RING_DEVICE = REPO_ROOT / "host_tools" / "benchmarks" / "device" / "uplink_device.py"
RING_BLOCKS = 8  # 6 data sectors of 127 records: 635 events
TODAY = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=SITE_TZ_MIN)).date()  # the site's day


@dataclass
class Settings:
    seed: int = 1
    minutes: float = 2.0
    outage_s: float = 15.0  # a platform outage: long enough for the small ring to overflow
    ring_pace_ms: int = 15  # the small-ring door appends an event this often
    grace_s: float = 45.0  # after a fault ends, how long the door may take to grant again
    drain_s: float = 180.0  # at the end, how long the doors may take to deliver everything
    # Sizes: stop early once every non-zero one is reached (the minutes stay the limit).
    cuts: int = 0
    broker_faults: int = 0
    hostile: int = 0
    # The doors' MicroPython: pypi (the PyPI 64-bit interpreter, modules from .mpy files) or
    # unix32 (the 32-bit firmware image, `doorctl build unix32`, everything frozen in).
    image: str = field(default_factory=selected_image)


@dataclass
class Report:
    seed: int
    schedule: list[str] = field(default_factory=list)  # the actions run, in order
    counts: dict[str, int] = field(default_factory=dict)
    stalls: list[str] = field(default_factory=list)
    doors: list[DoorVerdict] = field(default_factory=list)
    seconds: float = 0.0
    hostile_sent: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def cuts(self) -> int:
        return sum(self.counts.get(k, 0) for k in ("cut", "ring_cut"))

    @property
    def broker_faults(self) -> int:
        return sum(self.counts.get(k, 0) for k in ("broker_stop", "broker_kill"))

    @property
    def events(self) -> int:
        return sum(d.events for d in self.doors)

    @property
    def lost(self) -> int:
        return sum(d.lost for d in self.doors)

    @property
    def duplicated(self) -> int:
        return sum(d.duplicated for d in self.doors)

    @property
    def problems(self) -> list[str]:
        out = [f"{d.device}: {p}" for d in self.doors for p in d.problems]
        return out + [f"stall: {s}" for s in self.stalls] + self.errors

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        gaps = sum(d.gap_events for d in self.doors)
        return (f"seed {self.seed}: {len(self.schedule)} actions in {self.seconds:.0f} s, "
                f"{self.cuts} power cuts, {self.broker_faults} broker faults, "
                f"{self.hostile_sent} hostile messages; {self.events} events at the platform, "
                f"{gaps} reported lost by an overflowing door, {self.lost} lost, "
                f"{self.duplicated} duplicated, {len(self.stalls)} stalls"
                + (f"; the platform exited by itself {self.counts['platform_exited']} times "
                   "(platform.log)" if self.counts.get("platform_exited") else ""))

    def failure(self) -> str:
        lines = [f"torture run FAILED (reproduce: doorctl torture --seed {self.seed})",
                 *self.problems, "schedule:"]
        lines += [f"  {i:4d} {a}" for i, a in enumerate(self.schedule)]
        return "\n".join(lines)


class RingDoor:
    """The small-ring door's process: the firmware's journal and uplink, appending steadily."""

    def __init__(self, work: Path, broker: tuple[str, int], key: bytes, pace_ms: int,
                 firmware_image: str = "pypi") -> None:
        self.image = work / "ring.img"
        self.log = work / "ring.log"
        self.broker = broker
        self.key = key
        self.pace_ms = pace_ms
        self.boot = 0
        self.proc: subprocess.Popen[bytes] | None = None
        if firmware_image == "unix32":  # the journal and uplink frozen in the image
            self.interpreter = unix32_binary()
            self.env = dict(os.environ, MICROPYPATH=".frozen")
        else:
            self.interpreter = micropython()
            self.env = micropython_env(build_device_tree()[0].parents[1])

    def start(self, count: int = 10**7, cut_after: int = 0) -> None:
        self.boot += 1
        opts = ["key=" + self.key.hex()] + ([f"cut={cut_after}"] if cut_after else [])
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [self.interpreter, "-X", "heapsize=128K", str(RING_DEVICE), str(self.image),
                 str(RING_BLOCKS), self.broker[0], str(self.broker[1]), RING, str(self.boot),
                 str(count), str(self.pace_ms if count else 0), *opts],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.image.parent)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def bounds(self) -> tuple[int, int]:
        return journal_bounds(self.image)


class PlatformProcess:
    """`doorctl platform run` in a process of its own, so it can be killed like a crashed one."""

    def __init__(self, work: Path, broker: tuple[str, int], db: Path, keys: Path) -> None:
        self.cmd = [sys.executable, "-c", "from host_tools.cli import main; main()", "platform",
                    "run", "--broker", f"{broker[0]}:{broker[1]}", "--db", str(db),
                    "--keys", str(keys)]
        self.log = work / "platform.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=REPO_ROOT, start_new_session=True)

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def running(self) -> bool:
        """Whether it runs (False when it was never started, killed, or exited by itself)."""
        return self.proc is not None and self.proc.poll() is None


class TortureRun:
    def __init__(self, work: Path, settings: Settings,
                 say: Callable[[str], None] = lambda s: None) -> None:
        self.work = work
        self.s = settings
        self.say = say
        self.report = Report(settings.seed)
        self.rng = random.Random(settings.seed ^ 0x5EED)
        self.fault_end = time.monotonic()
        self._started: list[Callable[[], None]] = []  # undo, newest first
        self.broker_paused = False

    # -- set-up and tear-down ------------------------------------------------------------

    def setup(self) -> None:
        w = self.work
        w.mkdir(parents=True, exist_ok=True)
        self.site = SiteKit()
        self.key = command_key(self.site.keys)
        self.broker = Mosquitto().start()
        self._started.append(self.broker.stop)
        self.proxy = FaultProxy(self.broker.host, self.broker.port).start()
        self._started.append(self.proxy.stop)
        self.db = w / "platform.db"
        keys = w / "site.json"
        sitekeys.write_secret(keys, self.site.keys, force=True)
        # The door is commissioned and given a whitelist with one valid card by an in-process
        # platform; the torture's platform then runs as its own process on the same database.
        store = Store(str(self.db))
        platform = Platform(store, self.broker.host, self.broker.port, ack_key=self.key)
        platform.cache_key = self.site.cache_key
        platform.start()
        try:
            self.dev = VirtualDevice(w / "door", image=self.s.image)
            self.dev.start()
            self._started.append(self.dev.stop)
            provision(self.dev.pty, config=self.site.door_config(
                DOOR, door_no=0, broker={"host": self.proxy.host, "port": self.proxy.port,
                                         "keepalive": 10}), keys=self.site.door_keys())
            self.dev.restart()
            self.emu = PN532Emulator()
            self._connect_door()
            self.card, ref = self.site.issue()
            reg = CardRegistry(store, self.site.keys)
            reg.issue(ref.hex(), "r-1", "101", [0], TODAY - dt.timedelta(days=30),
                      TODAY + dt.timedelta(days=365))
            _wait(lambda: DOOR in platform.cache_states, 60, "the door's whitelist state")
            result = sync(platform, reg)
            if result.get(DOOR, "").startswith("updated") is False:
                raise RuntimeError(f"the door did not take its whitelist: {result}")
        finally:
            platform.stop()
            store.close()
        self.platform = PlatformProcess(w, (self.broker.host, self.broker.port), self.db, keys)
        self.platform.start()
        self._started.append(self.platform.kill)
        self.ring = RingDoor(w, (self.proxy.host, self.proxy.port), self.key, self.s.ring_pace_ms,
                             self.s.image)
        self.ring.start()
        self._started.append(self.ring.kill)
        self.hostile = Hostile(self.broker.host, self.broker.port, [DOOR, RING], self.rng)
        self._started.append(self.hostile.stop)
        if not swipe_local(self.io, self.emu, self.card):  # the card works before any fault
            _wait(lambda: self._swipe(), self.s.grace_s, "the first grant")

    def _connect_door(self) -> None:
        self.link = self.emu.connect(self.dev.reader_addr)
        self.io = VirtualIO(self.dev.io_addr)

    def _disconnect_door(self) -> None:
        for c in (self.io, self.link):
            try:
                c.close()
            except OSError:
                pass

    def close(self) -> None:
        if self.broker_paused:
            self.broker.pause(False)
        try:
            self._disconnect_door()
        except AttributeError:
            pass
        for undo in reversed(self._started):
            try:
                undo()
            except Exception:  # noqa: BLE001 - tear down the rest
                pass
        self._started.clear()

    # -- the actions ---------------------------------------------------------------------

    def _swipe(self) -> bool:
        try:
            return swipe_local(self.io, self.emu, self.card)
        except (AssertionError, OSError):
            return False

    def _recovered(self) -> None:
        self.fault_end = time.monotonic()

    def _door_cut(self, a: Action) -> None:
        self._disconnect_door()
        self.dev.kill()
        time.sleep(a.pause_s / 3)
        if a.arg:  # boot armed: its a.arg-th journal write is torn; the power goes right after
            (self.dev.state_dir / CUT_FILE).write_text(str(a.arg))
            try:
                self.dev.restart(timeout_s=3)
                time.sleep(a.pause_s)
            except Exception:  # noqa: BLE001 - torn during boot: it never got ready
                pass
            self.dev.kill()
            (self.dev.state_dir / CUT_FILE).unlink(missing_ok=True)
        self.dev.restart()
        self._connect_door()
        self._recovered()

    def _ring_cut(self, a: Action) -> None:
        if a.arg:  # torn at a flash write: start armed, let it run into the cut
            self.ring.kill()
            self.ring.start(cut_after=a.arg)
            deadline = time.monotonic() + 5
            while self.ring.proc is not None and self.ring.proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
        self.ring.kill()
        time.sleep(a.pause_s / 3)
        self.ring.start()

    def act(self, a: Action) -> None:
        k = a.kind
        if k == "swipe":
            if not self._swipe():
                since = time.monotonic() - self.fault_end
                if since > self.s.grace_s:
                    self.report.stalls.append(f"a valid card denied {since:.0f} s after the last "
                                              f"fault (action {len(self.report.schedule) - 1})")
        elif k == "rex":
            try:
                self.io.set_input("rex", True)
                time.sleep(0.3)
                self.io.set_input("rex", False)
            except OSError:
                pass
        elif k == "cut":
            self._door_cut(a)
        elif k == "ring_cut":
            self._ring_cut(a)
        elif k == "broker_stop":
            self.broker.pause(True)
            self.broker_paused = True
            time.sleep(a.pause_s)
            self.broker.pause(False)
            self.broker_paused = False
            self._recovered()
        elif k == "broker_kill":
            self.broker.kill()
            time.sleep(a.pause_s)
            self.broker.start()
            self._recovered()
        elif k == "tcp_drop":
            self.proxy.drop_connections()
            time.sleep(a.pause_s)
            self._recovered()
        elif k == "tcp_cut_publish":
            self.proxy.cut_next_publish_from_client("/events")
            time.sleep(a.pause_s)
            self._recovered()
        elif k == "connack_cut":
            self.proxy.cut_after_connack(a.arg)
            self.proxy.drop_connections()
            time.sleep(a.pause_s)
            self._recovered()
        elif k in ("platform_kill", "outage"):
            self.platform.kill()
            time.sleep(a.pause_s)
            self.platform.start()
            self._recovered()
        elif k == "hostile":
            self.report.hostile_sent += self.hostile.burst(a.arg)
            time.sleep(min(a.pause_s, 1.0))
        self.report.counts[k] = self.report.counts.get(k, 0) + 1

    # -- the run -------------------------------------------------------------------------

    def run(self) -> Report:
        t0 = time.monotonic()
        end = t0 + self.s.minutes * 60
        try:
            self.setup()
            for a in make_plan(self.s.seed, 100_000, self.s.outage_s):
                if time.monotonic() >= end or self._sizes_reached():
                    break
                if not self.platform.running():  # it exited by itself: restarted, as a
                    self.platform.start()          # service manager would, and reported
                    self.report.counts["platform_exited"] = \
                        self.report.counts.get("platform_exited", 0) + 1
                self.report.schedule.append(str(a))
                self.say(f"{len(self.report.schedule) - 1:4d} {a}")
                self.act(a)
            self.finish()
        except Exception as e:  # noqa: BLE001 - the run's verdict says what broke, with the seed
            self.report.errors.append(f"{type(e).__name__}: {e}")
        finally:
            self.close()
            self.report.seconds = time.monotonic() - t0
        return self.report

    def _sizes_reached(self) -> bool:
        r, s = self.report, self.s
        wanted = [(r.cuts, s.cuts), (r.broker_faults, s.broker_faults), (r.hostile_sent, s.hostile)]
        return any(w for _, w in wanted) and all(got >= w for got, w in wanted)

    def _door_state(self) -> str:
        """What the door says of itself, for a stall's report."""
        try:
            st = self.io.status()
        except Exception as e:  # noqa: BLE001 - a door that does not answer is the answer
            return f"no status: {e}"
        return ", ".join(f"{k}={v}" for k, v in st.items() if not isinstance(v, (dict, list)))[:600]

    def finish(self) -> None:
        """Heal everything, let both doors deliver, then judge."""
        self.say("healing: every fault off, the doors deliver")
        self.hostile.clear_retained()
        self.proxy.cut_after_connack(0)
        self.proxy.stop_dropping()
        if not self.platform.running():
            self.platform.start()
        self._recovered()
        # The valid card opens again within the grace period.
        t = time.monotonic()
        while not self._swipe():
            if time.monotonic() - t > self.s.grace_s:
                self.report.stalls.append(f"a valid card still denied {self.s.grace_s:.0f} s "
                                          f"after the last fault (the door: {self._door_state()})")
                break
            time.sleep(1.0)
        # The small-ring door stops appending (a last cut) and drains what it holds.
        self.ring.kill()
        self.ring.start(count=0)
        assert self.ring.proc is not None
        try:
            self.ring.proc.wait(self.s.drain_s)
        except subprocess.TimeoutExpired:
            self.ring.kill()
            self.report.stalls.append(f"the small-ring door did not deliver everything in "
                                      f"{self.s.drain_s:.0f} s")
        # The virtual door: delivered up to what its flash holds, then powered off to judge.
        deadline = time.monotonic() + self.s.drain_s
        door_bounds = (1, 0)
        while True:
            store = Store(str(self.db))
            try:
                door_bounds = journal_bounds(self.dev.state_dir / "journal.img")
                if store.ack_upto(DOOR) >= door_bounds[1]:
                    self._disconnect_door()
                    self.dev.kill()
                    door_bounds = journal_bounds(self.dev.state_dir / "journal.img")
                    if store.ack_upto(DOOR) >= door_bounds[1]:
                        break
                    self.dev.restart()  # it recorded more as it went: deliver that too
                    self._connect_door()
            finally:
                store.close()
            if time.monotonic() > deadline:
                self.report.stalls.append(f"the virtual door did not deliver everything in "
                                          f"{self.s.drain_s:.0f} s")
                break
            time.sleep(0.5)
        ring_oldest, ring_newest = self.ring.bounds()
        store = Store(str(self.db))
        try:
            self.report.doors = [
                verdict(store, DOOR, door_bounds[1], door_bounds[0]),
                verdict(store, RING, ring_newest, ring_oldest, numbered=True),
            ]
        finally:
            store.close()


def _wait(cond: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def run(settings: Settings, work: Path | None = None,
        say: Callable[[str], None] = lambda s: None) -> Report:
    """One torture run in `work` (a temporary folder, removed after a passing run)."""
    import tempfile

    tmp = work or Path(tempfile.mkdtemp(prefix="torture-"))
    report = TortureRun(tmp, settings, say).run()
    if work is None and report.ok:
        shutil.rmtree(tmp, ignore_errors=True)
    elif not report.ok:
        report.errors.append(f"logs and flash images kept in {tmp}")
    return report


__all__ = ["Report", "Settings", "TortureRun", "run"]
