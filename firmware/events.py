"""The recorder that journals events (their codes: wire/codes.py, one table with docs/protocol.md).

Every event goes to the power-safe journal first; the uplink is only woken. Nothing on the
card-to-relay path waits for the network.
"""

import struct

from journal_format import MS_UNTRUSTED
from wire.codes import JOURNAL_NEAR_FULL
from wire.common import FLAG_TIME_VALID

class Uptime:
    """Time since boot from a tick counter that wraps (every 2**30 ms, about 12 days, on the
    ESP32, and a difference is only good for half of that): added up from reading to reading,
    so it stays right as long as it is read at least every few days (the door task reads it at
    every poll). Kept as seconds plus milliseconds: a count of milliseconds would pass the
    32-bit port's small-integer range after 12 days, and then allocate at every poll."""

    def __init__(self, clock):
        self.clock = clock
        self._last = clock.ticks_ms()
        self._s = 0
        self._ms = 0  # 0..999, beyond _s

    def update(self):
        now = self.clock.ticks_ms()
        d = self.clock.ticks_diff(now, self._last)
        self._last = now
        if d > 0:
            d += self._ms
            self._s += d // 1000
            self._ms = d % 1000

    def seconds(self):
        self.update()
        return self._s

    def split(self):
        """(seconds, milliseconds 0-999) since boot."""
        self.update()
        return self._s, self._ms

    def ms(self):
        """Milliseconds since boot (a large integer after 12 days on the ESP32: not for the
        door's loop)."""
        self.update()
        return self._s * 1000 + self._ms


class Recorder:
    """Stamps events with the clock (UTC when set, else seconds since boot) and journals them."""

    def __init__(self, journal, clock, boot):
        self.journal = journal
        self.clock = clock
        self.boot = boot
        self.uptime = Uptime(clock)
        self.listeners = []  # callables(seq, code, arg): the uplink's kick, the status report
        # `journal_near_full` marks the crossing only: a journal still near full at boot was
        # reported when it crossed, in an earlier boot (not again at every boot).
        self.near_full_reported = journal.near_full()

    def mono_s(self):
        return self.uptime.seconds()

    def record(self, code, arg=0, payload=b"", flags=0):
        """Journal one event; its sequence number. Raises only when it was not journaled."""
        now = self.clock.time()
        if now is None:
            t, frac = self.uptime.split()
        else:
            t, frac = int(now), int((now - int(now)) * 1000)
            flags |= FLAG_TIME_VALID
            if not self.clock.trusted:
                frac |= MS_UNTRUSTED  # the platform places it by this boot's time_set events
        seq = self.journal.append(code, flags, self.boot & 0xFFFF, t, frac, arg & 0xFFFF, payload)
        # Journaled: from here a MemoryError must not reach the caller, who would take the
        # event for lost and make it again (a grant journaled twice, its card read again).
        try:
            for fn in self.listeners:
                fn(seq, code, arg)
        except Exception:  # noqa: BLE001 - heap: a kick missed, the sender looks at its timer
            pass
        try:
            self._near_full()
        except Exception:  # noqa: BLE001 - heap, flash: reported with a later record
            self.near_full_reported = False
        return seq

    def _near_full(self):
        if self.journal.near_full():
            if not self.near_full_reported:
                payload = struct.pack("<II", self.journal.depth(), self.journal.capacity)
                self.near_full_reported = True
                self.record(JOURNAL_NEAR_FULL, 0, payload)
        else:
            self.near_full_reported = False
