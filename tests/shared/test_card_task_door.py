# mpy-heapsize: 128K
# The card task hands each decision to the door (both interpreters). The reader driver and
# the card session it imports take more than 64 KiB of bytecode on the unix port.
from firmware import events as ev
from firmware.card_task import CardTask

GOOD, LOST = b"g" * 8, b"l" * 8
NOON = 20000 * 86400 + 12 * 3600


class CardResult:
    def __init__(self, code, ref=None, low_assurance=False):
        self.code = code
        self.ok = code == 0
        self.ref = ref
        self.low_assurance = low_assurance


class _Cache:
    """The whitelist's decide(), as the card task calls it."""

    def decide(self, ref, door, now, mode):
        if ref == GOOD:
            return True, "granted", False
        return False, "lost", False

class _Clock:
    def ticks_ms(self):
        return 0

    def ticks_diff(self, a, b):
        return a - b

    def time(self):
        return NOON


class _Board:
    clock = _Clock()
    reader_uart = None


class _Door:
    def __init__(self, mode="normal"):
        self.calls = []
        self._mode = mode

    def grant(self, kind, master, ref, flags):
        self.calls.append(("grant", kind, master, ref, flags))

    def deny(self, reason, ref, flags):
        self.calls.append(("deny", reason, ref, flags))

    def mode(self):
        return self._mode


def test_handle_sends_grants_and_refusals_to_the_door():
    door = _Door()
    task = CardTask(_Board(), door, None, _Cache(), 0)
    task.handle(CardResult(0, GOOD))
    task.handle(CardResult(0, LOST))
    task.handle(None)  # no key store on this door
    assert door.calls == [("grant", "card", False, GOOD, 0),
                          ("deny", ev.DENY_REASONS["lost"], LOST, 0),
                          ("deny", ev.DENY_REASONS["no_keys"], b"", 0)]
    assert task.decisions == 3
