"""When the door trusts its clock, and which platform times may set it (docs/protocol.md
"Time sync", docs/threat-model.md).

A signed, fresh time (it answers the nonce of this connection, or it is the signed `time`
command) is trusted: it sets the clock in either direction, before the last journaled record
too, and repairs a wrong one. An unsigned time carries nothing the door can check: it may
only set a clock that is not set yet (for display and the events' times, each flagged
untrusted), never before the last record journaled before this boot, so a stale or
far-future retained message cannot move a set clock. Card validity, schedules and signed
commands read `trusted_time`: None until a trusted time came.

Pure logic: the clock (board/interface.py `Clock`) is handed in.
"""


def check_time(new_s, clock_is_set, floor_s, signed=False):
    """"" when a time from the platform may set the door's clock, else why not. `floor_s`:
    UTC of the last record journaled before this boot (0: unknown)."""
    if signed:
        return ""
    if clock_is_set:
        return "clock_set"
    if floor_s and new_s < floor_s:
        return "before_last_record"
    return ""


def trusted_time(clock):
    """UTC seconds the door may act on, or None: unset, or set from an unsigned time."""
    return clock.time() if clock.trusted else None


def is_trusted(clock):
    return clock.trusted and clock.time() is not None


class TimeSync:
    """Applies the platform's time messages to the clock; what a setting changes elsewhere
    (the uplink's time base, the journal, the command gate, the patrol report) listens."""

    def __init__(self, clock, floor_s=0):
        self.clock = clock
        self.floor_s = floor_s  # UTC of the last record before this boot (0: unknown)
        self.refused = 0
        self.listeners = []  # callable(epoch_s, signed), after each setting

    def offer(self, epoch_ms, signed=False):
        """"" when the time set the clock (listeners told), else why not (counted)."""
        # Whole seconds, as an int: the ESP32 port's floats are single precision, and an
        # epoch as a float keeps only 128 s resolution there.
        secs = epoch_ms // 1000
        why = check_time(secs, self.clock.time() is not None, self.floor_s, signed)
        if why:
            self.refused += 1
            return why
        self.clock.set_time(secs, signed)
        for fn in self.listeners:
            fn(secs, signed)
        return ""
