# A fake board for the door task's tests (firmware/door_task.py): inputs the test sets by
# hand, outputs that keep every value set, the hand-moved clock. Used on both interpreters.
from board import interface
from tests.clock import ManualClock


class In:
    def __init__(self, v):
        self.v = v
        self.fail = 0  # reads left to fail with a MemoryError

    def read(self):
        if self.fail:
            self.fail -= 1
            raise MemoryError("memory allocation failed, allocating 16 bytes")
        return self.v


class Out:
    def __init__(self):
        self.v = None
        self.changes = []
        self.fail = 0  # sets left to fail with a MemoryError (pins reported over a link)

    def set(self, v):
        if self.fail:
            self.fail -= 1
            raise MemoryError("memory allocation failed, allocating 32 bytes")
        self.v = v
        self.changes.append(v)


class Board(interface.Board):
    """Every input fitted, at rest; `fire=False`: no fire input (not fitted)."""

    def __init__(self, fire=True):
        self.clock = ManualClock(t=1000)
        self.door_contact = In("closed")
        self.rex = In(False)
        self.tamper = In(False)
        self.fire = In(False) if fire else None
        self.power = In(True)
        self.relay = Out()
        self.buzzer = Out()
        self.led = Out()
