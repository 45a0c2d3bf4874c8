# A clock the test moves by hand, with the board clock's interface (docs/architecture.md,
# "Board interface"): the ticks are `t`, `ticks_add`/`ticks_diff` are the ticks package's
# (MicroPython's own on the device interpreter, the same wraparound arithmetic on CPython),
# and the wall time is `epoch` (None: not set), trusted unless the test sets `trusted` False.
# Used on both interpreters.
from ticks import ticks_add, ticks_diff


class ManualClock:
    trusted = True  # a time the test sets is one the door could verify, unless it says not

    def __init__(self, t=0, epoch=None):
        self.t = t
        self.epoch = epoch

    def ticks_ms(self):
        return self.t

    def ticks_add(self, t, delta):
        return ticks_add(t, delta)

    def ticks_diff(self, a, b):
        return ticks_diff(a, b)

    def time(self):
        return self.epoch
