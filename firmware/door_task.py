"""The door task: binds firmware/door.py's machine to the board (docs/door.md).

Every `poll_ms` it reads the raw inputs, debounces them (firmware/inputs.py), feeds changes
to the machine, runs its timers, and drives the relay (lock polarity from the configuration),
the buzzer pattern and the LED. Patrol reports are built here and published by a second,
separate task, so the network never delays the door. Allocation-light: nothing is built per
poll except when something changes.
"""

import asyncio

from firmware.clock_trust import is_trusted, trusted_time
from firmware.door import MODES, NORMAL, PASSAGE, DoorMachine, MemorySink, in_schedule
from firmware.events import Uptime
from firmware.inputs import Debouncer, check_contact
from firmware.patrol import Patrol

# Buzzer patterns by name, each (on ms, period ms); on == period is a steady tone; any other
# name is off. Tuples of constants are frozen into the image; a dict would be built in the heap.
BUZZER_NAMES = ("prealarm", "alarm", "deny")
BUZZER_TIMES = ((200, 1000), (1000, 1000), (100, 200))
INPUT_NAMES = ("door_contact", "rex", "tamper", "fire", "power")
SERVE_MS = 20  # polls from inside another task's long job: at most this often


def relay_energised(lock, fail_safe):
    """Fail-secure locks are energised to unlock; fail-safe locks are energised to lock."""
    return (lock == "locked") if fail_safe else (lock == "unlocked")


def buzzer_on(pattern, elapsed_ms):
    if pattern not in BUZZER_NAMES:
        return False
    on, period = BUZZER_TIMES[BUZZER_NAMES.index(pattern)]
    return on >= period or (elapsed_ms % period) < on


class DoorTask:
    def __init__(self, board, cfg=None, sink=None, providers=None, status=None, uptime=None):
        """`uptime`: the recorder's Uptime (firmware/events.py), kept fresh by every poll."""
        cfg = cfg or {}
        door_cfg = cfg.get("door") or {}
        self.board = board
        clock = board.clock
        self.clock = clock
        now = clock.ticks_ms()
        self.uptime = uptime if uptime is not None else Uptime(clock)
        self.machine = DoorMachine(door_cfg, now, sink if sink is not None else MemorySink(),
                                   diff=clock.ticks_diff, add=clock.ticks_add, wall=clock.time)
        mc = self.machine.cfg
        self.poll_ms = mc["poll_ms"]
        self.fail_safe = mc["fail_safe"]
        deb = mc["debounce_ms"]
        d = clock.ticks_diff
        self.sources = []  # (name, input object, debouncer)
        initial = {"door_contact": "closed", "rex": False, "tamper": False, "fire": False,
                   "power": True}
        for name in INPUT_NAMES:
            src = getattr(board, name)  # None: not fitted
            if src is not None:
                self.sources.append((name, src, Debouncer(initial[name], deb, d)))
        self.status = status if status is not None else {}
        p = {"uptime_s": self.uptime.seconds,
             "seq": lambda: self.status.get("last_seq", 0),
             "journal_depth": lambda: self.status.get("journal_depth", 0),
             "cache_version": lambda: self.status.get("cache_version"),
             "cache_hash": lambda: self.status.get("cache_hash"),
             "reader": lambda: self.status.get("reader"),
             "clock_synced": lambda: bool(self.status.get("clock_synced")) or clock.time() is not None,
             "clock_trusted": lambda: is_trusted(clock)}
        if providers:
            p.update(providers)
        interval = cfg.get("patrol_interval_s", 300) * 1000
        self.patrol = Patrol(self.machine, p, interval, now, d)
        self.publish = None  # async callable(report) -> bool, e.g. Uplink.publish_status
        self._report_ready = asyncio.Event()
        self._relay = None
        self._buzzer = None
        self._led = None
        self._pattern = "off"
        self._pattern_t0 = now
        self.schedule = mc["passage_schedule"]
        self.tz_s = mc["tz_offset_min"] * 60
        self._sched_at = now
        self.scheduled = False  # passage mode was set by the schedule
        self._want = None  # the schedule's last answer: it acts on its edges only
        self._served = now

    # -- one poll ---------------------------------------------------------------------

    def serve(self):
        """A poll from inside a long job of another task (a 100k snapshot's verification, a
        whitelist merge), at most every SERVE_MS: the door's inputs, timers and relay are
        served meanwhile, so a lock never stays open past its window."""
        now = self.clock.ticks_ms()
        d = self.clock.ticks_diff(now, self._served)
        if d >= SERVE_MS or d < 0:  # < 0: the last serve is too long ago for the wrapping ticks
            self._served = now
            self.poll(now)

    def poll(self, now):
        m = self.machine
        self.uptime.update()
        for name, src, deb in self.sources:
            raw = src.read()
            if name == "door_contact":
                raw = check_contact(raw)
            else:
                raw = bool(raw)
            if deb.update(now, raw):
                m.input(now, name, deb.value)
        if self.schedule and self.clock.ticks_diff(now, self._sched_at) >= 1000:
            self._sched_at = now
            # the passage schedule needs a clock the door could verify
            self.check_schedule(now, trusted_time(self.clock))
        m.tick(now)
        self.drive(now)
        if self.patrol.due(now):
            self.status["patrol"] = self.patrol.report(now)
            self._report_ready.set()

    def check_schedule(self, now, epoch):
        """Passage mode on the configured schedule (needs UTC). It acts when an interval
        starts or ends: from normal to passage, and back only from its own passage, so a
        command given in between wins."""
        if epoch is None:
            return
        minute = ((int(epoch) + self.tz_s) // 60) % 1440
        want = in_schedule(self.schedule, minute)
        if want == self._want:
            return
        self._want = want
        m = self.machine
        if want and m.mode == NORMAL:
            m.set_mode(now, PASSAGE)
            self.scheduled = True
        elif not want and self.scheduled:
            self.scheduled = False
            if m.mode == PASSAGE:
                m.set_mode(now, NORMAL)

    def drive(self, now):
        m = self.machine
        b = self.board
        rel = relay_energised(m.lock, self.fail_safe)
        if rel != self._relay:
            self._relay = rel
            b.relay.set(rel)
        if m.buzzer != self._pattern:
            self._pattern = m.buzzer
            self._pattern_t0 = now
        bz = buzzer_on(self._pattern, self.clock.ticks_diff(now, self._pattern_t0))
        if bz != self._buzzer:
            self._buzzer = bz
            b.buzzer.set(bz)
        if m.led != self._led:
            self._led = m.led
            b.led.set(m.led)

    def sleep_ms(self, now):
        """Until the next poll, or sooner when a machine deadline comes first."""
        dl = self.machine.next_deadline()
        wait = self.poll_ms
        if dl is not None:
            wait = min(wait, max(0, self.clock.ticks_diff(dl, now)))
        return wait

    # -- for commands, the card flow and the console ---------------------------------

    def grant(self, kind="card", master=False, ref=b"", flags=0):
        """An access decision said yes (card, rex, remote); False when lockdown refused it."""
        ok = self.machine.grant(self.clock.ticks_ms(), kind, master, ref, flags)
        self.drive(self.clock.ticks_ms())
        return ok

    def deny(self, reason, ref=b"", flags=0):
        """An access decision said no: journaled, shown at the door."""
        self.machine.deny(self.clock.ticks_ms(), reason, ref, flags)
        self.drive(self.clock.ticks_ms())

    def mode(self):
        return self.machine.effective_mode()

    def configure(self, changes):
        """New timings from a checked config command: door keys go to the machine at once,
        `patrol_interval_s` to the patrol."""
        for k in changes:
            if k == "patrol_interval_s":
                self.patrol.interval_ms = changes[k] * 1000
            elif k in self.machine.cfg:
                self.machine.cfg[k] = changes[k]

    def set_mode(self, mode):
        """normal / passage / lockdown / fire (ValueError for anything else). A commanded
        mode is not undone by the passage schedule."""
        self.machine.set_mode(self.clock.ticks_ms(), mode)
        self.scheduled = False
        self.drive(self.clock.ticks_ms())

    def command(self, op, args=None):
        """A platform command for the door, already authenticated and in date by the caller:
        open (args: master), mode (args: mode), patrol. Returns (ok, reason)."""
        args = args or {}
        if op == "open":
            if self.grant("remote", bool(args.get("master")), b""):
                return True, ""
            return False, "lockdown"
        if op == "mode":
            mode = args.get("mode")
            if mode not in MODES:
                return False, "bad_mode"
            self.set_mode(mode)
            return True, ""
        if op == "patrol":
            self.patrol_now()
            return True, ""
        return False, "unknown_command"

    def patrol_now(self):
        """An on-demand patrol: the report is built at the next poll and published."""
        self.patrol.request()

    # -- tasks ------------------------------------------------------------------------

    async def run(self):
        clock = self.clock
        while True:
            now = clock.ticks_ms()
            self.poll(now)
            await asyncio.sleep_ms(self.sleep_ms(now))

    async def run_patrol(self):
        """Publish each report; while the uplink is down, retry the latest one every second
        (the status topic is retained: the platform sees the door as it is now)."""
        while True:
            await self._report_ready.wait()
            self._report_ready.clear()
            while self.publish is not None:
                try:
                    if await self.publish(self.status["patrol"]) is not False:
                        break
                except Exception as e:  # noqa: BLE001 - the uplink reconnects on its own
                    from firmware.log import log

                    log("patrol: publish failed", repr(e))
                await asyncio.sleep_ms(1000)
                self._report_ready.clear()  # the retry sends the latest report anyway
