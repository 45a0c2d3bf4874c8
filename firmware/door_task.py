"""The door task: binds firmware/door.py's machine to the board (docs/door.md).

Every `poll_ms` it reads the raw inputs, debounces them (firmware/inputs.py), feeds changes
to the machine, runs its timers, and drives the relay (lock polarity from the configuration),
the buzzer pattern and the LED. Patrol reports are built here and published by a second,
separate task, so the network never delays the door. Allocation-light: nothing is built per
poll except when something changes.

A MemoryError (a tight or fragmented heap; the journal, the event recorder or a board input
allocate when something changes) must not end the task: an exception out of a task ends every
task of the firmware, and the board resets. It is caught at each poll, grant, refusal and mode
change, and the machine is *restarted*, not trusted: a transition cut short between two of
its events can hold an alarm bit whose event was never journaled, an opening without its
timers, a debounced input the machine never took. So: (1) the relay is driven locked at once,
without allocating (a grant's unlock window ends; in fire the door stays released); (2) a fresh
machine is made with the commanded mode, the fire input and the timings kept; (3) it is told at
once every state input not at rest as debounced (an open door, tamper, a faulted loop, mains
lost), before a card decided next can reach it, so every such alarm is raised again (not REX: a
press, whose debouncer is kept, so a button held or stuck through a restart opens nothing): an
alarm may be journaled twice, never lost (an opening under way becomes one nobody granted:
forced_open; told at the next poll instead, a grant decided in between made it look granted;
and an opening the old machine held forced stays forced, told in normal mode, though the
mode or the fire input that failed came after it; an opening keeps its held-open clock and
alarms, `DoorMachine.resume_opening`).
When even that finds no heap, the state inputs' debouncers go back to their rest values and the
next poll tells it; (4) it is counted (`door_out_of_memory` in the status), logged, and a patrol report is made
at once. Only when the heap cannot even hold the fresh machine does the task end (the board
resets, the lock de-energised): a restart in place keeps the lock driven and costs one poll,
a reset costs seconds and every task's state. A patrol report that finds no heap is made at
the next poll (`patrol_out_of_memory`); the machine is not touched by it.
"""

import asyncio
import gc

from firmware.clock_trust import is_trusted, trusted_time
from firmware.door import FIRE, MODES, NORMAL, PASSAGE, DoorMachine, MemorySink, in_schedule
from firmware.events import Uptime
from firmware.inputs import Debouncer, check_contact
from firmware.log import log
from firmware.patrol import ABSENT, Patrol, source

# Buzzer patterns by name, each (on ms, period ms); on == period is a steady tone; any other
# name is off. Tuples of constants are frozen into the image; a dict would be built in the heap.
BUZZER_NAMES = ("prealarm", "alarm", "deny")
BUZZER_TIMES = ((200, 1000), (1000, 1000), (100, 200))
INPUT_NAMES = ("door_contact", "rex", "tamper", "fire", "power")
INPUT_REST = ("closed", False, False, False, True)  # each input's value at rest, by INPUT_NAMES
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
        self.machine = self._new_machine(door_cfg, now,
                                         sink if sink is not None else MemorySink())
        mc = self.machine.cfg
        self.poll_ms = mc["poll_ms"]
        self.fail_safe = mc["fail_safe"]
        deb = mc["debounce_ms"]
        d = clock.ticks_diff
        self.sources = []  # (name, input object, debouncer, rest value)
        for i in range(len(INPUT_NAMES)):
            name = INPUT_NAMES[i]
            src = getattr(board, name)  # None: not fitted
            if src is not None:
                rest = INPUT_REST[i]
                self.sources.append((name, src, Debouncer(rest, deb, d), rest))
        self.status = status if status is not None else {}
        # Polls and patrol reports cut short by a MemoryError; in the status from the start,
        # so counting one allocates nothing.
        self.out_of_memory = 0
        self.patrol_out_of_memory = 0
        self.status["door_out_of_memory"] = 0
        self.status["patrol_out_of_memory"] = 0
        self._broken = False  # no heap even for a fresh machine: the task ends
        self._provider = source(providers) if providers else None  # firmware/main.py's
        interval = cfg.get("patrol_interval_s", 300) * 1000
        self.patrol = Patrol(self.machine, self._report_value, interval, now, d)
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

    def _report_value(self, key):
        """A patrol report's value owned elsewhere (firmware/patrol.py): the owner's provider
        first, then the status the other tasks keep."""
        if self._provider is not None:
            v = self._provider(key)
            if v is not ABSENT:
                return v
        s = self.status
        if key == "uptime_s":
            return self.uptime.seconds()
        if key == "seq":
            return s.get("last_seq", 0)
        if key == "journal_depth":
            return s.get("journal_depth", 0)
        if key in ("cache_version", "cache_hash", "reader"):
            return s.get(key)
        if key == "clock_synced":
            return bool(s.get("clock_synced")) or self.clock.time() is not None
        if key == "clock_trusted":
            return is_trusted(self.clock)
        return ABSENT

    def _fresh(self, old, now, fire_on):
        """A fresh machine in place of `old`: its configuration, sink and commanded mode, the
        fire input as debounced (a fire release never drops on a restart)."""
        m = self._new_machine(old.cfg, now, old.sink)
        m.mode = old.mode
        m.fire_input = fire_on
        return m

    def _new_machine(self, door_cfg, now, sink):
        c = self.clock
        return DoorMachine(door_cfg, now, sink, diff=c.ticks_diff, add=c.ticks_add, wall=c.time)

    # -- one poll ---------------------------------------------------------------------

    def serve(self):
        """A poll from inside a long job of another task (a 100k snapshot's verification, a
        whitelist merge), at most every SERVE_MS: the door's inputs, timers and relay are
        served meanwhile, so a lock never stays open past its window."""
        now = self.clock.ticks_ms()
        d = self.clock.ticks_diff(now, self._served)
        if d >= SERVE_MS or d < 0:  # < 0: the last serve is too long ago for the wrapping ticks
            self._served = now
            self.step(now)

    def step(self, now):
        """One poll that a MemoryError does not end: the machine is restarted instead (see the
        module's docstring). Raises only when not even that found heap."""
        if self._broken:
            raise MemoryError("door: no heap for its machine")
        try:
            self.poll(now)
        except MemoryError:
            self.restart(now)

    def restart(self, now):
        """After a MemoryError in the middle of a transition: relock, then a fresh machine told
        every input again (the module's docstring says why)."""
        old = self.machine
        fire = None
        for name, src, deb, rest in self.sources:
            if name == "fire":
                fire = deb
        fire_on = bool(fire is not None and fire.value)
        released = old.mode == FIRE or (fire_on and old.cfg["fire_from_input"])
        if not released:
            self._relay = relay_energised("locked", self.fail_safe)
            self.board.relay.set(self._relay)
        self.out_of_memory += 1
        self.status["door_out_of_memory"] = self.out_of_memory
        self._broken = True
        gc.collect()
        try:
            # Told at once, before a grant can reach it: an opening nobody granted, fed at the
            # next poll instead, would look granted to a card decided in between.
            m = self._fresh(old, now, fire_on)
            forced = "forced_open" in old.active_alarms()
            if forced:  # an opening nobody granted stays one in a mode or fire that came after
                m.mode, m.fire_input = NORMAL, False  # it, and through a contact loop fault
                m.input(now, "door_contact", "open")
            for name, src, deb, rest in self.sources:
                if name != "fire" and name != "rex" and deb.value != rest:
                    m.input(now, name, deb.value)
            m.mode, m.fire_input = old.mode, fire_on
            m.resume_opening(old, now)
        except MemoryError:  # not even that: a fresh machine told at the next poll instead
            gc.collect()
            m = self._fresh(old, now, fire_on)
            for name, src, deb, rest in self.sources:
                if name != "fire" and name != "rex":  # REX is a press, not a state: a button
                    deb.reset(rest)  # held (or stuck) through a restart must not open the door again
        m.tick(now)
        self.machine = m
        self.patrol.machine = m
        self.patrol.request()
        self._broken = False
        self.drive(now)
        try:
            log("door: out of memory, machine restarted")
        except MemoryError:
            pass

    def poll(self, now):
        m = self.machine
        self.uptime.update()
        for name, src, deb, rest in self.sources:
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
            try:
                self.status["patrol"] = self.patrol.report(now)
            except MemoryError:  # the machine is whole: the report is made at the next poll
                self.patrol.request()
                self.patrol_out_of_memory += 1
                self.status["patrol_out_of_memory"] = self.patrol_out_of_memory
                return
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
        # Each output is marked driven only once set: one whose set() raised (a board whose
        # pins report over a link: a MemoryError) is set again at the next poll.
        rel = relay_energised(m.lock, self.fail_safe)
        if rel != self._relay:
            b.relay.set(rel)
            self._relay = rel
        if m.buzzer != self._pattern:
            self._pattern = m.buzzer
            self._pattern_t0 = now
        bz = buzzer_on(self._pattern, self.clock.ticks_diff(now, self._pattern_t0))
        if bz != self._buzzer:
            b.buzzer.set(bz)
            self._buzzer = bz
        if m.led != self._led:
            b.led.set(m.led)
            self._led = m.led

    def sleep_ms(self, now):
        """Until the next poll, or sooner when a machine deadline comes first."""
        dl = self.machine.next_deadline()
        wait = self.poll_ms
        if dl is not None:
            wait = min(wait, max(0, self.clock.ticks_diff(dl, now)))
        return wait

    # -- for commands, the card flow and the console ---------------------------------

    def grant(self, kind="card", master=False, ref=b"", flags=0):
        """An access decision said yes (card, rex, remote); False when lockdown refused it.
        A MemoryError restarts the machine (door locked) and reaches the caller: nothing
        was granted, nor journaled (the recorder raises only for an event it did not
        journal), and the card may be read again. Once the machine took the decision, it
        stands: outputs that could not be driven now are driven at the next poll."""
        now = self.clock.ticks_ms()
        try:
            ok = self.machine.grant(now, kind, master, ref, flags)
        except MemoryError:
            self.restart(now)
            raise
        self._drive_after_decision()
        return ok

    def deny(self, reason, ref=b"", flags=0):
        """An access decision said no: journaled, shown at the door (a MemoryError: as grant)."""
        now = self.clock.ticks_ms()
        try:
            self.machine.deny(now, reason, ref, flags)
        except MemoryError:
            self.restart(now)
            raise
        self._drive_after_decision()

    def _drive_after_decision(self):
        try:
            self.drive(self.clock.ticks_ms())
        except MemoryError:  # raised, the caller would decide the card again
            pass

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
        now = self.clock.ticks_ms()
        try:
            self.machine.set_mode(now, mode)
        except MemoryError:  # as grant: the caller's command failed, the door is whole
            self.restart(now)
            raise
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
            self.step(now)
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
                    self._publish_failed(e)
                await asyncio.sleep_ms(1000)
                self._report_ready.clear()  # the retry sends the latest report anyway

    def _publish_failed(self, e):
        """Logged; a MemoryError also counted. Nothing here may end the task: the log line
        itself may find no heap."""
        if isinstance(e, MemoryError):
            self.patrol_out_of_memory += 1
            self.status["patrol_out_of_memory"] = self.patrol_out_of_memory
            gc.collect()
        try:
            log("patrol: publish failed", repr(e))
        except MemoryError:
            pass
