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


# --- one decision per presentation ------------------------------------------------------

UID_MISMATCH = 5  # firmware.card_session.UID_MISMATCH: what a random-ID card gives the door


class _Ticks:
    """A clock the test moves: polls and card steps take simulated time."""

    def __init__(self):
        self.t = 0

    def ticks_ms(self):
        return self.t

    def ticks_diff(self, a, b):
        return a - b

    def time(self):
        return NOON


class _Target:
    def __init__(self, uid):
        self.uid = uid
        self.sak = 0x20


class _Field:
    """A PN532 whose field holds what `now(ms)` says: a target or None."""

    def __init__(self, clock, now):
        self.clock = clock
        self.now = now
        self.uart = object()
        self.lists = 0

    async def begin(self):
        return (0x32, 1, 6, 7)

    async def list_target(self, timeout_ms):
        self.lists += 1
        self.clock.t += 5
        return self.now(self.clock.t)

    async def release(self):
        pass

    async def exchange(self, apdu):
        return b""


class _Session:
    def __init__(self, clock):
        self.clock = clock
        self.reads = 0

    async def read_async(self, exchange, uid, sak):
        self.reads += 1
        self.clock.t += 120  # select, authenticate, GetCardUID
        return CardResult(UID_MISMATCH, None)


def _run(field_at, until_ms):
    import asyncio

    clock = _Ticks()
    board = _Board()
    board.clock = clock
    door = _Door()
    task = CardTask(board, door, None, _Cache(), 0)
    task.reader = _Field(clock, field_at)
    task.session = _Session(clock)

    async def loop():
        while clock.t < until_ms:
            await task.step()
            clock.t += task.cfg["poll_ms"]

    asyncio.run(loop())
    return door.calls, task


def _random_uid():
    import os

    return b"\x08" + os.urandom(3)


def test_a_random_id_card_held_5_s_gives_one_refusal():
    """A new UID at every activation, and the field re-powering it (a missed poll in four)."""
    n = [0]

    def field(ms):
        n[0] += 1
        return None if n[0] % 4 == 0 else _Target(_random_uid())

    calls, task = _run(field, 5000)
    assert [c[0] for c in calls] == ["deny"], calls
    assert calls[0][1] == ev.DENY_CARD_BASE + UID_MISMATCH
    assert task.reader.lists > 40  # the field was polled all along


def test_a_fixed_card_in_a_flickering_field_is_decided_once():
    n = [0]

    def field(ms):
        n[0] += 1
        return None if n[0] % 3 == 0 else _Target(b"\x04\x11\x22\x33\x44\x55\x66")

    calls, _ = _run(field, 5000)
    assert len(calls) == 1


def test_taken_away_and_presented_again_is_a_new_decision():
    def field(ms):
        if ms < 1000 or 2500 <= ms < 3500:
            return _Target(_random_uid())
        return None

    calls, _ = _run(field, 5000)
    assert len(calls) == 2


def test_another_card_right_after_is_decided_at_once():
    def field(ms):
        uid = b"\x04\x11\x22\x33\x44\x55\x66" if ms < 1000 else b"\x04\x99\x88\x77\x66\x55\x44"
        return _Target(uid)

    calls, _ = _run(field, 2000)
    assert len(calls) == 2
