"""The door: lock, contact, alarms and modes as a pure state machine (docs/door.md).

No hardware and no asyncio here. Every method takes `now`, the board's ticks in ms; the
machine keeps explicit deadlines and says when it next needs `tick()` (`next_deadline()`).
Each transition sends typed events (code from wire/codes.py, arg, payload) to a sink
with the signature of `Recorder.record(code, arg, payload)`. The outputs it wants are plain
attributes: `lock` ("locked"/"unlocked"), `buzzer` (pattern name), `led` (colour).
"""

import struct

from wire import codes as ev
from wire.codes import DENY_LOCKDOWN, KINDS
from wire.common import SITE_TZ_MIN
from ticks import ticks_add, ticks_diff

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

# The door's settings and their defaults (docs/door.md, "Defaults"), overridden by the `door`
# object of config.json. Pairs of constants, so the image keeps them in ROM (a dict would be
# built in the heap at import); the schedule's time zone is the site's (wire/common.py).
_DEFAULTS = const((
    ("unlock_ms", 5000),  # unlock window after a grant
    ("prealarm_ms", 20000),  # door open this long: buzzer pre-alarm at the door
    ("held_open_ms", 30000),  # door open this long: held-open alarm (door + platform)
    ("closer_limit_ms", 15000),  # a passage whose door is not shut within this is a slow close
    ("closer_slow_count", 3),  # consecutive slow closes -> closer fault
    ("bounce_ms", 1500),  # re-opening within this after a close is a bounce
    ("closer_bounce_count", 3),  # bounces before the door settles -> closer fault
    ("debounce_ms", 50),  # input debounce (used by the binding, firmware/inputs.py)
    ("poll_ms", 20),  # input poll period (binding)
    ("fail_safe", False),  # False: fail-secure lock (energise to unlock); True: fail-safe
    ("fire_from_input", True),  # the fire input releases the door (fire mode)
    ("held_open_in_passage", True),  # passage mode still raises held-open alarms
    ("passage_schedule", None),  # [[start_min, end_min], ...] minutes of the local day (binding)
    ("deny_ms", 1000),  # red LED and deny beeps after a refused card
))

NORMAL, PASSAGE, LOCKDOWN, FIRE = "normal", "passage", "lockdown", "fire"
MODES = (NORMAL, PASSAGE, LOCKDOWN, FIRE)  # index = arg of mode_changed
_TAMPER_SHORT = const(1)  # sensor_tamper arg
_TAMPER_CUT = const(2)
_CLOSER_SLOW = const(1)  # closer_fault arg
_CLOSER_BOUNCE = const(2)

# Alarm bits (active_alarms()).
_A_FORCED = const(1)
_A_PREALARM = const(2)
_A_HELD = const(4)
_A_SENSOR = const(8)
_A_DEVICE = const(16)
_A_CLOSER = const(32)
_A_POWER = const(64)
_ALARM_NAMES = const(((_A_FORCED, "forced_open"), (_A_PREALARM, "held_open_prealarm"),
                      (_A_HELD, "held_open"), (_A_SENSOR, "sensor_tamper"),
                      (_A_DEVICE, "device_tamper"), (_A_CLOSER, "closer_fault"),
                      (_A_POWER, "power_lost")))


class MemorySink:
    """Keeps events in a bounded list: (code, arg, payload). For tests and boards without a journal."""

    def __init__(self, limit=64):
        self.limit = limit
        self.events = []

    def __call__(self, code, arg=0, payload=b"", flags=0):
        if len(self.events) >= self.limit:
            self.events.pop(0)
        self.events.append((code, arg, payload))

    def codes(self):
        return [e[0] for e in self.events]

    def clear(self):
        self.events = []


def in_schedule(schedule, minute):
    """True when `minute` (0-1439 of the local day) is inside one of the [start, end)
    intervals; an interval with end < start runs over midnight."""
    if not schedule:
        return False
    for iv in schedule:
        start, end = iv[0], iv[1]
        if start <= end:
            if start <= minute < end:
                return True
        elif minute >= start or minute < end:
            return True
    return False


def merge_config(overrides=None):
    """The defaults with `overrides` (config.json's `door`) on top; other keys are ignored."""
    cfg = dict(_DEFAULTS)
    cfg["tz_offset_min"] = SITE_TZ_MIN  # local time for the schedule
    if overrides:
        for k in overrides:
            if k in cfg:
                cfg[k] = overrides[k]
    return cfg


class DoorMachine:
    """See docs/door.md for the state table. Times are ticks in ms; `diff`/`add` are the
    board clock's ticks_diff/ticks_add (the ticks package's by default); `wall` returns epoch seconds
    or None (for the time of a power loss)."""

    def __init__(self, config=None, now=0, sink=None, diff=None, add=None, wall=None):
        self.cfg = merge_config(config)
        self.sink = sink if sink is not None else MemorySink()
        self._diff = diff or ticks_diff
        self._add = add or ticks_add
        self._wall = wall
        self.mode = NORMAL  # commanded mode
        self.fire_input = False
        self.door = "closed"  # last known leaf position: closed / open
        self.sensor = None  # None, or "short"/"cut" while the contact loop is faulted
        self.device_tamper = False
        self.power = True
        self.alarms = 0
        # timers (None = not armed)
        self.unlock_until = None  # end of the unlock window
        self.prealarm_at = None
        self.held_at = None
        self.slow_at = None  # closer-limit deadline of the current passage
        self.settle_at = None  # end of the bounce window after a close
        # episode state
        self.authorized = False  # the current opening was granted (or passage/fire mode)
        self.ep_raised = 0  # alarm bits already raised in the current opening (one each)
        self.passage_slow = False  # the current passage missed the closer limit
        self.slow_count = 0
        self.bounce_count = 0
        self.power_lost_at = None
        self.power_lost_wall = None
        self.deny_until = None  # end of the refused-card indication
        self.lock = "locked"
        self.buzzer = "off"
        self.led = "off"
        self._update()

    # -- helpers --------------------------------------------------------------------

    def _emit(self, code, arg=0, payload=b"", flags=0):
        if flags:
            self.sink(code, arg, payload, flags)
        else:
            self.sink(code, arg, payload)

    def _due(self, now, t):
        return t is not None and self._diff(now, t) >= 0

    def effective_mode(self):
        if self.mode == FIRE or (self.fire_input and self.cfg["fire_from_input"]):
            return FIRE
        return self.mode

    def _released(self):
        m = self.effective_mode()
        return m == PASSAGE or m == FIRE

    def _update(self):
        """Recompute outputs from state."""
        released = self._released()
        self.lock = "unlocked" if (released or self.unlock_until is not None) else "locked"
        a = self.alarms
        if a & (_A_FORCED | _A_HELD | _A_SENSOR | _A_DEVICE):
            self.buzzer = "alarm"
        elif a & _A_PREALARM:
            self.buzzer = "prealarm"
        elif self.deny_until is not None:
            self.buzzer = "deny"
        else:
            self.buzzer = "off"
        if a & (_A_FORCED | _A_HELD | _A_SENSOR | _A_DEVICE):
            self.led = "red"
        elif a & (_A_PREALARM | _A_CLOSER):
            self.led = "amber"
        elif self.lock == "unlocked":
            self.led = "green"
        elif self.deny_until is not None:
            self.led = "red"
        else:
            self.led = "off"

    def _raise(self, bit, code, arg=0, payload=b""):
        if not self.alarms & bit:
            self.alarms |= bit
            self._emit(code, arg, payload)

    def _relock(self):
        self.unlock_until = None

    def _held_timers_apply(self, m=None):
        if m is None:
            m = self.effective_mode()
        if m == FIRE:
            return False
        if m == PASSAGE and not self.cfg["held_open_in_passage"]:
            return False
        return True

    # -- timers ---------------------------------------------------------------------

    def _timers(self, now):
        if self._due(now, self.unlock_until):
            self._relock()
        if self._due(now, self.deny_until):
            self.deny_until = None
        if self._due(now, self.prealarm_at):
            self.prealarm_at = None
            if self._held_timers_apply() and not self.ep_raised & _A_PREALARM:
                self.ep_raised |= _A_PREALARM
                self._raise(_A_PREALARM, ev.HELD_OPEN_PREALARM)
        if self._due(now, self.held_at):
            self.held_at = None
            if self._held_timers_apply() and not self.ep_raised & _A_HELD:
                self.ep_raised |= _A_HELD
                self._raise(_A_HELD, ev.HELD_OPEN)
        if self._due(now, self.slow_at):
            self.slow_at = None
            self.passage_slow = True
            self.slow_count += 1
            if self.slow_count >= self.cfg["closer_slow_count"]:
                self._raise(_A_CLOSER, ev.CLOSER_FAULT, _CLOSER_SLOW)
        if self._due(now, self.settle_at):
            # The door stayed shut past the bounce window: it has settled.
            self.settle_at = None
            self.bounce_count = 0
            if self.alarms & _A_CLOSER and self.slow_count == 0:
                self.alarms &= ~_A_CLOSER
                self._emit(ev.CLOSER_FAULT_CLEARED)

    def next_deadline(self):
        """The earliest armed deadline (ticks), or None."""
        best = self._earlier(self.unlock_until, self.prealarm_at)
        best = self._earlier(best, self.held_at)
        best = self._earlier(best, self.slow_at)
        best = self._earlier(best, self.deny_until)
        return self._earlier(best, self.settle_at)

    def _earlier(self, a, b):
        if a is None:
            return b
        if b is None or self._diff(a, b) <= 0:
            return a
        return b

    def tick(self, now):
        self._timers(now)
        self._update()

    def resume_opening(self, old, now):
        """After a restart (firmware/door_task.py) with the door still open: the held-open
        clock of `old`'s opening, not one started at the restart (an opening would otherwise
        get up to a whole held_open_ms more, and a fire release coming in between would drop
        the alarm it was due), and its held-open alarms raised again (journaled twice,
        never lost)."""
        if self.door != "open" or old.door != "open":
            return
        diff = self._diff
        if old.prealarm_at is not None and self.prealarm_at is not None \
                and diff(old.prealarm_at, self.prealarm_at) < 0:
            self.prealarm_at = old.prealarm_at
        if old.held_at is not None and self.held_at is not None \
                and diff(old.held_at, self.held_at) < 0:
            self.held_at = old.held_at
        if old.alarms & _A_HELD:
            self.held_at = None
            self.ep_raised |= _A_HELD
            self._raise(_A_HELD, ev.HELD_OPEN)
        if old.alarms & _A_PREALARM and self._held_timers_apply():
            self.prealarm_at = None
            self.ep_raised |= _A_PREALARM
            self._raise(_A_PREALARM, ev.HELD_OPEN_PREALARM)
        self._timers(now)
        self._update()

    # -- door movements -------------------------------------------------------------

    def _opened(self, now):
        self.door = "open"
        self.ep_raised = 0
        self._emit(ev.DOOR_OPENED)
        if self.settle_at is not None:
            # Re-opened within the bounce window after a close (no closer judgement in fire
            # mode: people are leaving through it).
            self.settle_at = None
            if self.effective_mode() != FIRE:
                self.bounce_count += 1
                if self.bounce_count >= self.cfg["closer_bounce_count"]:
                    self._raise(_A_CLOSER, ev.CLOSER_FAULT, _CLOSER_BOUNCE)
        self.authorized = self.unlock_until is not None or self._released()
        if not self.authorized:
            self._raise(_A_FORCED, ev.FORCED_OPEN)
        self.prealarm_at = self._add(now, self.cfg["prealarm_ms"])
        self.held_at = self._add(now, self.cfg["held_open_ms"])
        self.passage_slow = False
        if self.authorized and self.effective_mode() != FIRE:
            self.slow_at = self._add(now, self.cfg["closer_limit_ms"])
        else:
            self.slow_at = None

    def _closed(self, now):
        self.door = "closed"
        self._emit(ev.DOOR_CLOSED)
        if self.authorized and self.effective_mode() != FIRE:
            if self.slow_at is not None:  # shut within the closer limit
                self.slow_count = 0
        self.slow_at = None
        self.prealarm_at = None
        self.held_at = None
        if self.alarms & _A_HELD:
            self._emit(ev.HELD_OPEN_CLEARED)
        self.alarms &= ~(_A_FORCED | _A_PREALARM | _A_HELD)
        self.authorized = False
        # Anti-tailgating: the grant is used up, relock at once.
        self._relock()
        self.settle_at = self._add(now, self.cfg["bounce_ms"])

    def _contact(self, now, value):
        if value == "short" or value == "cut":
            first = self.sensor is None
            self.sensor = value  # a short that becomes a cut is shown as a cut (one alarm)
            if first:
                self._raise(_A_SENSOR, ev.SENSOR_TAMPER, _TAMPER_SHORT if value == "short" else _TAMPER_CUT)
            return
        if self.sensor is not None:
            self.sensor = None
            if self.alarms & _A_SENSOR:
                self.alarms &= ~_A_SENSOR
                self._emit(ev.SENSOR_TAMPER_CLEARED)
        if value == "open" and self.door == "closed":
            self._opened(now)
        elif value == "closed" and self.door == "open":
            self._closed(now)

    # -- public API -----------------------------------------------------------------

    def input(self, now, name, value):
        """A debounced input changed: door_contact (closed/open/short/cut), rex, tamper,
        fire, power (bools)."""
        self._timers(now)
        if name == "door_contact":
            self._contact(now, value)
        elif name == "rex":
            if value:
                self._grant(now, "rex", False, b"")
        elif name == "tamper":
            value = bool(value)
            if value != self.device_tamper:
                self.device_tamper = value
                if value:
                    self._raise(_A_DEVICE, ev.DEVICE_TAMPER)
                else:
                    self.alarms &= ~_A_DEVICE
                    self._emit(ev.DEVICE_TAMPER_CLEARED)
        elif name == "fire":
            before = self.effective_mode()
            self.fire_input = bool(value)
            self._mode_changed(now, before)
        elif name == "power":
            self._power(now, bool(value))
        self._update()

    def _power(self, now, present):
        if present == self.power:
            return
        self.power = present
        if not present:
            self.power_lost_at = now
            self.power_lost_wall = self._wall() if self._wall else None
            self._raise(_A_POWER, ev.POWER_LOST)
        else:
            secs = self._diff(now, self.power_lost_at) // 1000 if self.power_lost_at is not None else 0
            self.power_restored(secs, self.power_lost_wall)
            self.power_lost_at = None
            self.power_lost_wall = None

    def power_restored(self, secs, lost_epoch=None, source=0):
        """Mains back (source 0) or, at boot, the controller's own power came back (source 1,
        the loss found in the journal): payload seconds without power (u32, 0 unknown) and
        the UTC time of the loss (u32, 0 when unknown)."""
        self.alarms &= ~_A_POWER
        self.power = True
        self._emit(ev.POWER_RESTORED, source,
                   struct.pack("<II", max(0, int(secs)), int(lost_epoch or 0)))

    def grant(self, now, kind="card", master=False, ref=b"", flags=0):
        """An access decision said yes (card, rex, remote). Returns True when the door was
        released (False: refused by lockdown). `flags` go on the event (low assurance)."""
        self._timers(now)
        ok = self._grant(now, kind, master, ref, flags)
        self._update()
        return ok

    def deny(self, now, reason, ref=b"", flags=0):
        """An access decision said no: journal it and show it at the door (red, beeps);
        the lock is not touched."""
        self._timers(now)
        self._emit(ev.ACCESS_DENIED, reason, ref, flags)
        self.deny_until = self._add(now, self.cfg["deny_ms"])
        self._update()

    def _grant(self, now, kind, master, ref, flags=0):
        method = KINDS.index(kind) + 1 if kind in KINDS else 1  # a card's for a kind it does not know
        if self.effective_mode() == LOCKDOWN and not master:
            self._emit(ev.ACCESS_DENIED, DENY_LOCKDOWN, ref, flags)
            self.deny_until = self._add(now, self.cfg["deny_ms"])
            return False
        self.deny_until = None
        self._emit(ev.ACCESS_GRANTED, method, ref, flags)
        self.unlock_until = self._add(now, self.cfg["unlock_ms"])
        if self.door == "open" and not self.authorized:
            # Someone with a right to pass is at an already open door: from now on the
            # opening is a passage (the forced alarm of this episode stays reported).
            self.authorized = True
        return True

    def set_mode(self, now, mode):
        """normal / passage / lockdown / fire (commanded; the fire input also forces fire)."""
        if mode not in MODES:
            raise ValueError(mode)
        self._timers(now)
        before = self.effective_mode()
        self.mode = mode
        self._mode_changed(now, before)
        self._update()

    def _mode_changed(self, now, before):
        after = self.effective_mode()
        if after == before:
            return
        self._emit(ev.MODE_CHANGED, MODES.index(after))
        if (after == PASSAGE or after == FIRE) and self.door == "open":
            self.authorized = True
        if after == LOCKDOWN:
            self._relock()  # a running unlock window ends at once
        if after == FIRE:
            # Evacuation: no held-open or closer judgement while the fire release holds.
            self.prealarm_at = self.held_at = self.slow_at = None
            self.alarms &= ~_A_PREALARM
        elif self.door == "open" and not self._held_timers_apply(before) \
                and self._held_timers_apply(after):
            # Fire release, or passage without held-open alarms, over with the door still
            # open: the held-open clock starts now (still once per opening).
            self.prealarm_at = self._add(now, self.cfg["prealarm_ms"])
            self.held_at = self._add(now, self.cfg["held_open_ms"])

    # -- status ---------------------------------------------------------------------

    def door_state(self):
        if self.sensor is not None:
            return "sensor_" + self.sensor
        if self.door == "open":
            if self.alarms & _A_HELD:
                return "held_open"
            if self.alarms & _A_FORCED:
                return "forced_open"
        return self.door

    def active_alarms(self):
        return [name for bit, name in _ALARM_NAMES if self.alarms & bit]
