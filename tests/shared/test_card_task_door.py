# mpy-heapsize: 144K
# The card task hands each decision to the door (both interpreters). The reader driver and
# the card session it imports take more than 64 KiB of bytecode on the unix port.
from board import interface
from wire import codes as ev
from firmware.card_task import CardTask
from tests.clock import ManualClock

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

class _Board(interface.Board):
    clock = ManualClock(epoch=NOON)
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
                          ("deny", ev.deny_code("lost"), LOST, 0),
                          ("deny", ev.deny_code("no_keys"), b"", 0)]
    assert task.decisions == 3
    assert task.status["decisions"] == 3  # in the status report too (the I/O channel's)



def test_a_read_cut_short_is_journaled_as_a_refusal_but_not_counted_as_a_decision():
    """card_lost: the card is read again, and that read is its decision. Counted, it made a
    host that presents the next card at each new decision (the soak) present it to a door
    still holding the one before as decided: a stop at 49,733 decisions at 72 KiB."""
    door = _Door()
    task = CardTask(_Board(), door, None, _Cache(), 0)
    task.handle(CardResult(ev.CARD_LOST, None))
    assert door.calls == [("deny", ev.deny_code("card_lost"), b"", 0)]
    assert task.decisions == 0 and task.status["decisions"] == 0
    task.handle(CardResult(0, GOOD))  # read again: the decision
    assert task.decisions == 1 and task.status["decisions"] == 1

# --- one decision per presentation ------------------------------------------------------

UID_MISMATCH = ev.CARD_UID_MISMATCH  # what a random-ID card gives the door


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

    async def rf_retries(self, passive):
        self.retries = passive

    async def abort(self):
        pass

    async def wait_target(self, wait_ms, max_targets=2, renew_ms=0):
        """The chip with MaxRetries FF: one activation try every 5 ms until a card answers,
        or the host gives up after wait_ms (a renewal changes nothing for this chip)."""
        assert self.retries == 0xFF
        self.lists += 1
        start = self.clock.t
        while True:
            self.clock.t += 5
            target = self.now(self.clock.t)
            if target is not None or self.clock.t - start >= wait_ms:
                return target

    async def release(self):
        self.released = getattr(self, "released", 0) + 1

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


MODES = (0, 200)  # polling (MaxRetries 2, a pause between polls), the chip waiting (wait_ms)


def _run(field_at, until_ms, wait_ms=200, held_up=None):
    """`held_up(step)`: ms the event loop is held up by other work before that step."""
    import asyncio

    clock = ManualClock(epoch=NOON)  # polls and card steps move it
    board = _Board()
    board.clock = clock
    door = _Door()
    task = CardTask(board, door, None, _Cache(), 0, {"wait_ms": wait_ms})
    task.reader = _Field(clock, field_at)
    task.session = _Session(clock)

    async def loop():
        n = 0
        while clock.t < until_ms:
            if held_up is not None:
                clock.t += held_up(n)
            n += 1
            await task.step()
            if not task._waited:  # as CardTask.run: no pause after a wait in an empty field
                clock.t += task.cfg["poll_ms"]

    asyncio.run(loop())
    return door.calls, task


def _random_uid():
    import os

    return b"\x08" + os.urandom(3)


def test_a_random_id_card_held_5_s_gives_one_refusal():
    """A new UID at every activation, and the field re-powering it (a missed poll in four)."""
    for wait_ms in MODES:
        n = [0]

        def field(ms, n=n):
            n[0] += 1
            return None if n[0] % 4 == 0 else _Target(_random_uid())

        calls, task = _run(field, 5000, wait_ms)
        assert [c[0] for c in calls] == ["deny"], (wait_ms, calls)
        assert calls[0][1] == ev.deny_code("uid_mismatch")
        assert task.reader.lists > 40  # the field was polled all along


def test_a_fixed_card_in_a_flickering_field_is_decided_once():
    for wait_ms in MODES:
        n = [0]

        def field(ms, n=n):
            n[0] += 1
            return None if n[0] % 3 == 0 else _Target(b"\x04\x11\x22\x33\x44\x55\x66")

        calls, _ = _run(field, 5000, wait_ms)
        assert len(calls) == 1, wait_ms


def test_taken_away_and_presented_again_is_a_new_decision():
    def field(ms):
        if ms < 1000 or 2500 <= ms < 3500:
            return _Target(_random_uid())
        return None

    for wait_ms in MODES:
        calls, _ = _run(field, 5000, wait_ms)
        assert len(calls) == 2, wait_ms


def test_a_held_card_is_decided_once_though_the_loop_is_held_up_between_reads():
    """A whitelist's content hash or merge holds the event loop for a second (more on an
    ESP32): the card task reads nothing meanwhile, and the card still in the field when it
    reads again is the same presentation. Time without a read is no absence."""
    uid = b"\x04\x11\x22\x33\x44\x55\x66"
    for wait_ms in MODES:
        calls, task = _run(lambda ms: _Target(uid), 8000, wait_ms,
                           lambda n: 1000 if n % 3 == 2 else 0)
        assert len(calls) == 1, (wait_ms, calls)
        assert task.reader.lists > 8


class _HeldUpWait(_Field):
    """The chip answers a card at once, and the answer waits in the UART while the event loop
    is held up elsewhere: the wait ends `late_ms` after it began."""

    late_ms = 1000

    async def wait_target(self, wait_ms, max_targets=2, renew_ms=0):
        self.lists += 1
        self.clock.t += self.late_ms
        return self.now(self.clock.t)


def _task_on_a_manual_clock():
    """(clock, task, door): a card task whose reader and session the test puts in."""
    clock = ManualClock(epoch=NOON)
    board = _Board()
    board.clock = clock
    door = _Door()
    return clock, CardTask(board, door, None, _Cache(), 0), door


def test_a_wait_held_up_with_the_card_in_the_field_is_no_absence():
    import asyncio

    clock, task, door = _task_on_a_manual_clock()
    uid = b"\x04\x11\x22\x33\x44\x55\x66"
    task.reader = _HeldUpWait(clock, lambda ms: _Target(uid))
    task.session = _Session(clock)

    async def go():
        for _ in range(5):
            await task.step()
    asyncio.run(go())
    assert len(door.calls) == 1, door.calls
    assert task.reader.lists == 5


def test_a_card_back_after_empty_reads_spanning_the_absence_is_a_new_decision():
    """The other side of the same rule: reads that found the field empty for absent_ms (the
    loop held up between them or not) end the presentation."""
    uid = b"\x04\x11\x22\x33\x44\x55\x66"

    def field(ms):
        return _Target(uid) if ms < 1000 or ms >= 3000 else None

    for wait_ms in MODES:
        calls, _ = _run(field, 5000, wait_ms, lambda n: 400 if n % 8 == 7 else 0)
        assert len(calls) == 2, (wait_ms, calls)


def test_a_flicker_then_a_reader_error_is_no_absence():
    """One empty wait (the field lost the card for a moment), then a read that failed (the
    reader restarted for a second): the time without a read is no evidence, and the card
    still there after it is the same presentation."""
    import asyncio

    from card_reader.pn532 import E_NO_ANSWER, PN532Error

    clock, task, door = _task_on_a_manual_clock()
    uid = b"\x04\x11\x22\x33\x44\x55\x66"
    script = ["card", "none", "error", "card", "card"]

    class Reader(_Field):
        async def wait_target(self, wait_ms, max_targets=2, renew_ms=0):
            what = script.pop(0)
            if what == "none":
                clock.t += wait_ms
                return None
            clock.t += 5
            if what == "error":
                raise PN532Error(E_NO_ANSWER, 0x4A)
            return _Target(uid)

    task.reader = Reader(clock, None)
    task.reader.retries = 0xFF
    task.session = _Session(clock)

    async def go():
        while script:
            try:
                await task.step()
            except PN532Error:  # as CardTask.run: the reader started again a second later
                task.reader_ready = False
                clock.t += 1000
            clock.t += task.cfg["poll_ms"]

    asyncio.run(go())
    assert len(door.calls) == 1, door.calls


def test_polls_that_miss_a_held_card_across_a_held_up_loop_are_no_absence():
    """Polling mode: two polls in a row miss the card (a flickering field) with the loop held
    up 400 ms between them: not two polls' worth of empty field."""
    uid = b"\x04\x11\x22\x33\x44\x55\x66"
    n = [0]

    def field(ms, n=n):
        n[0] += 1
        return None if n[0] in (10, 11) else _Target(uid)

    calls, _ = _run(field, 3000, 0, lambda k: 400 if k == 10 else 0)
    assert len(calls) == 1, calls


def test_a_wait_longer_than_the_absence_allows_is_cut_to_it():
    """A wait held up with the card there counts as empty up to its length: one configured
    as long as absent_ms would have a held card decided again."""
    task = CardTask(_Board(), _Door(), None, _Cache(), 0, {"wait_ms": 1000})
    assert task.cfg["wait_ms"] == 300 - 50 - 1
    assert CardTask(_Board(), _Door(), None, _Cache(), 0, {"wait_ms": 0}).cfg["wait_ms"] == 0
    assert CardTask(_Board(), _Door(), None, _Cache(), 0).cfg["wait_ms"] == 200


def test_the_same_card_back_after_a_long_wait_is_a_new_decision():
    """The chip waiting for a card finds the same fixed UID again 400 ms after it left: the
    field was empty longer than absent_ms all along, so this is a new presentation even
    though no empty answer came between (the wait was still running)."""
    uid = b"\x04\x11\x22\x33\x44\x55\x66"

    def field(ms):
        return _Target(uid) if ms < 300 or 700 <= ms < 800 else None

    calls, _ = _run(field, 1000, 1000)  # one wait spans the whole absence
    assert len(calls) == 2


def test_a_card_arriving_mid_wait_is_read_at_its_first_try():
    """With the chip waiting, a card placed 130 ms into a wait is read 0-5 ms later (its first
    activation try), not at the next poll."""
    decided = []

    class _Timed(_Session):
        async def read_async(self, exchange, uid, sak):
            decided.append(self.clock.t)
            return await _Session.read_async(self, exchange, uid, sak)

    clock = ManualClock(epoch=NOON)  # polls and card steps move it
    board = _Board()
    board.clock = clock
    task = CardTask(board, _Door(), None, _Cache(), 0)
    task.reader = _Field(clock, lambda ms: _Target(_random_uid()) if ms >= 130 else None)
    task.session = _Timed(clock)
    import asyncio

    async def go():
        await task.step()  # begin, then the wait in which the card comes
    asyncio.run(go())
    assert task.reader.retries == 0xFF
    assert decided and 130 <= decided[0] <= 135, decided


def test_an_empty_field_waited_on_reports_nothing_and_asks_for_no_pause():
    clock = ManualClock(epoch=NOON)  # polls and card steps move it
    board = _Board()
    board.clock = clock
    door = _Door()
    task = CardTask(board, door, None, _Cache(), 0)
    task.reader = _Field(clock, lambda ms: None)
    task.session = _Session(clock)
    import asyncio

    assert asyncio.run(task.step()) is False
    assert task._waited and clock.t >= task.cfg["wait_ms"] and door.calls == []


def test_another_card_right_after_is_decided_at_once():
    def field(ms):
        uid = b"\x04\x11\x22\x33\x44\x55\x66" if ms < 1000 else b"\x04\x99\x88\x77\x66\x55\x44"
        return _Target(uid)

    for wait_ms in MODES:
        calls, _ = _run(field, 2000, wait_ms)
        assert len(calls) == 2, wait_ms


def test_the_door_acts_before_the_reader_releases_the_card():
    """The relay does not wait for InRelease (the DESELECT): the decision reaches the door
    first, and the card is released right after it."""
    clock = ManualClock(epoch=NOON)  # polls and card steps move it
    board = _Board()
    board.clock = clock
    order = []

    class _OrderedDoor(_Door):
        def deny(self, reason, ref, flags):
            order.append(("door", getattr(task.reader, "released", 0)))
            _Door.deny(self, reason, ref, flags)

    task = CardTask(board, _OrderedDoor(), None, _Cache(), 0)
    task.reader = _Field(clock, lambda ms: _Target(b"\x04\x11\x22\x33\x44\x55\x66"))
    task.session = _Session(clock)
    import asyncio

    assert asyncio.run(task.step()) is True
    assert order == [("door", 0)]  # no release yet when the door acted
    assert task.reader.released == 1


def test_a_card_session_says_so_while_it_runs_and_not_after_even_when_it_fails():
    """A whitelist piece and the uplink's next events batch wait while a card session runs
    (firmware/gcpace.py card_first): a session that failed and still said so would hold both
    back for good."""
    import asyncio

    from firmware import gcpace

    seen = []

    class _Failing(_Session):
        async def read_async(self, exchange, uid, sak):
            seen.append(gcpace.card_first())
            raise OSError(5)

    clock = ManualClock(epoch=NOON)
    board = _Board()
    board.clock = clock
    task = CardTask(board, _Door(), None, _Cache(), 0, {"wait_ms": 200})
    task.reader = _Field(clock, lambda ms: _Target(b"\x04\x11\x22\x33\x44\x55\x66"))
    task.session = _Failing(clock)
    for session in (_Session(clock), task.session):
        task.session, task.present = session, None
        try:
            asyncio.run(task.step())
        except OSError:
            pass
        assert not gcpace.card_first()
    assert seen == [True]
