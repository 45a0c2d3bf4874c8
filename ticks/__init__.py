"""Tick arithmetic for code that has no board clock at hand, on both interpreters.

On MicroPython these are `time`'s own ticks functions: ticks wrap after TICKS_PERIOD
(2**30 on a 32-bit port such as the ESP32, about 12.4 days in ms), and only `ticks_diff`
and `ticks_add` give meaningful results across the wrap. On CPython (host tests, the host's
PN532 driver) the same arithmetic runs over `time.monotonic()` with the ESP32's period, so
wraparound bugs show on the host too. Board clocks provide the same four functions
(docs/architecture.md, "Board interface").
"""

import time

try:
    ticks_ms = time.ticks_ms
    ticks_us = time.ticks_us
    ticks_add = time.ticks_add
    ticks_diff = time.ticks_diff
    TICKS_PERIOD = time.ticks_add(0, -1) + 1  # the port's small-int range: 2**30 on 32 bits
except AttributeError:  # CPython
    TICKS_PERIOD = 1 << 30
    _MAX = TICKS_PERIOD - 1
    _HALF = TICKS_PERIOD // 2

    def ticks_ms():
        return int(time.monotonic() * 1000) & _MAX

    def ticks_us():
        return int(time.monotonic() * 1000000) & _MAX

    def ticks_add(ticks, delta):
        """`ticks` moved by `delta`; like MicroPython, a delta ticks_diff could not give
        back (|delta| >= TICKS_PERIOD / 2) is an OverflowError."""
        if not -_HALF < delta < _HALF:
            raise OverflowError("ticks interval overflow")
        return (ticks + delta) & _MAX

    def ticks_diff(end, start):
        """Signed ticks from `start` to `end`, correct while they are less than half a
        period apart."""
        return ((end - start + _HALF) & _MAX) - _HALF
