# mpy-heapsize: 128K
# A card read that runs out of heap costs that read, not the door: a MemoryError out of the
# card task stopped every task of the firmware (the image's workload at 72 KiB, 3 December:
# AES-CBC in an EV2 session during a whitelist snapshot). (128K: the card task's imports are
# compiled from source here.)
import asyncio

from board import interface
from firmware.card_task import CardTask
from tests.clock import ManualClock
from wire import codes as ev

UID = b"\x04\x11\x22\x33\x44\x55\x66"


class _Result:
    code = ev.CARD_UID_MISMATCH
    ok = False
    ref = None
    low_assurance = False


class _Board(interface.Board):
    reader_uart = None


class _Door:
    def __init__(self):
        self.calls = []

    def mode(self):
        return "normal"

    def grant(self, kind, master, ref, flags):
        self.calls.append("grant")

    def deny(self, reason, ref, flags):
        self.calls.append("deny")


class _Reader:
    """A PN532 with a card held in its field."""

    def __init__(self, clock):
        self.clock = clock
        self.uart = object()
        self.begins = 0

    async def begin(self):
        self.begins += 1
        return (0x32, 1, 6, 7)

    async def list_target(self, timeout_ms):
        self.clock.t += 5

        class _Target:
            uid = UID
            sak = 0x20

        return _Target()

    async def exchange(self, apdu):
        return b""

    async def release(self):
        pass


def _card_task(reader_class, session, door=None, cfg=None):
    """A card task on a fake board and reader: (task, door, status)."""
    clock = ManualClock()
    board = _Board()
    board.clock = clock
    door = door if door is not None else _Door()
    status = {}
    c = {"wait_ms": 0, "poll_ms": 1}
    c.update(cfg or {})
    task = CardTask(board, door, None, None, 0, c, status)
    task.reader = reader_class(clock)
    task.session = session
    return task, door, status


def _run(task, polls, done=lambda: False):
    """The task for up to `polls` waits of 2 ms (until `done`); True when it is still running."""

    async def go():
        running = asyncio.create_task(task.run())
        for _ in range(polls):
            await asyncio.sleep_ms(2)
            if done():
                break
        alive = not running.done()
        running.cancel()
        return alive

    return asyncio.run(go())


class _StarvedOnce:
    def __init__(self):
        self.reads = 0

    async def read_async(self, exchange, uid, sak):
        self.reads += 1
        if self.reads == 1:
            raise MemoryError("memory allocation failed, allocating 304 bytes")
        return _Result()


def test_a_card_read_out_of_memory_is_read_again_and_the_card_task_goes_on():
    task, door, status = _card_task(_Reader, _StarvedOnce())
    assert _run(task, 100, lambda: bool(door.calls)) is True  # still running
    assert door.calls == ["deny"]  # decided once, on the read after the failed one
    assert task.session.reads == 2 and task.reader.begins == 2  # the reader started again
    assert status["card_out_of_memory"] == 1


class _ReleaseStarvedOnce(_Reader):
    """A PN532 whose DESELECT after the first decision finds no heap."""

    def __init__(self, clock):
        super().__init__(clock)
        self.releases = 0

    async def release(self):
        self.releases += 1
        if self.releases == 1:
            raise MemoryError("memory allocation failed, allocating 64 bytes")


class _Reads:
    def __init__(self):
        self.reads = 0

    async def read_async(self, exchange, uid, sak):
        self.reads += 1
        return _Result()


def test_out_of_memory_after_a_decision_does_not_decide_the_held_card_again():
    # One decision per presentation: a MemoryError after the door decided (releasing the
    # card) must not make the card still on the reader a new presentation, decided and
    # journaled again (a grant would open the door a second time).
    task, door, status = _card_task(_ReleaseStarvedOnce, _Reads())
    # the card stays in the field all along (5 ms per poll < absent_ms)
    assert _run(task, 60) is True
    assert status["card_out_of_memory"] == 1
    assert task.reader.begins == 2  # the reader started again
    assert door.calls == ["deny"]  # decided once


class _Lost:
    code = ev.CARD_LOST
    ok = False
    ref = None
    low_assurance = False


class _AlwaysLost:
    async def read_async(self, exchange, uid, sak):
        return _Lost()


class _DoorStarvedOnce(_Door):
    """A door whose first refusal finds no heap (its task restarts the machine and raises)."""

    def deny(self, reason, ref, flags):
        if not self.calls:
            self.calls.append("no heap")
            raise MemoryError("memory allocation failed, allocating 32 bytes")
        self.calls.append("deny")


def test_a_card_lost_refusal_that_found_no_heap_is_journaled_at_the_next_loss():
    # One card_lost refusal per card within lost_quiet_ms: when that one was not journaled
    # (a MemoryError in the door), the card's next loss must be, not counted as already done.
    task, door, status = _card_task(_Reader, _AlwaysLost(), _DoorStarvedOnce())
    _run(task, 100, lambda: len(door.calls) > 1)  # 5 ms per poll: every loss is well within lost_quiet_ms
    assert status["card_out_of_memory"] == 1
    assert door.calls == ["no heap", "deny"]


def test_a_decision_the_door_could_not_journal_is_not_counted_and_the_card_is_read_again():
    # The status's count of decisions is what the soak checks each presentation against:
    # counted before the door had acted, one refusal journaled once read as two decisions.
    session = _StarvedOnce()
    session.reads = 1  # no failure in the read itself
    task, door, status = _card_task(_Reader, session, _DoorStarvedOnce())
    # There from the start: counting in the handler of a MemoryError allocates nothing.
    assert status["decisions"] == 0 and status["card_out_of_memory"] == 0
    _run(task, 100, lambda: "deny" in door.calls)
    assert door.calls == ["no heap", "deny"]
    assert status["decisions"] == 1 and task.decisions == 1
    assert status["card_out_of_memory"] == 1


class _Starved:
    """Reads that find no heap: every one, or (`every` 2) every other one."""

    def __init__(self, every=1):
        self.reads = 0
        self.every = every

    async def read_async(self, exchange, uid, sak):
        self.reads += 1
        if self.reads % self.every == 0:
            raise MemoryError("memory allocation failed, allocating 304 bytes")
        return _Result()


def test_reads_that_all_find_no_heap_for_starved_stop_ms_stop_the_firmware():
    # The last resort (the board restarts a firmware that stopped): at 72 KiB a door met a
    # MemoryError at every read for as long as it ran, deciding nothing and saying nothing.
    task, door, status = _card_task(_Reader, _Starved(), cfg={"starved_stop_ms": 50})
    try:
        asyncio.run(task.run())
    except MemoryError:
        pass
    else:
        raise AssertionError("the card task went on")
    # 5 ms of the board's clock per read: 50 ms are 11 failures, and it takes 20 to stop
    assert status["card_out_of_memory"] == 20 and door.calls == []


class _NewCards(_Reader):
    """A new card at every poll (a queue at the door)."""

    async def list_target(self, timeout_ms):
        self.clock.t += 5
        uid = bytes([4, self.clock.t & 0xFF, self.clock.t >> 8, 0, 0, 0, 0])

        class _Target:
            sak = 0x20

        _Target.uid = uid
        return _Target()


def test_reads_that_find_no_heap_between_reads_that_do_are_not_a_reason_to_stop():
    task, door, status = _card_task(_NewCards, _Starved(every=2), cfg={"starved_stop_ms": 50})
    assert _run(task, 150) is True  # far longer than 50 ms of the board's clock
    assert status["card_out_of_memory"] > 20 and task.clock.t > 200
    assert len(door.calls) >= status["card_out_of_memory"] - 1  # every other read decided


class _FlakyStart(_Reader):
    """A reader that cannot be started again every other time (PN532Error)."""

    async def begin(self):
        from card_reader.pn532 import E_NO_ANSWER, PN532Error

        self.begins += 1
        if self.begins % 2 == 0:
            raise PN532Error(E_NO_ANSWER)
        return (0x32, 1, 6, 7)


def test_a_reader_that_fails_to_start_between_starved_reads_does_not_reset_the_count():
    import asyncio as aio

    real = aio.sleep_ms
    task, door, status = _card_task(_FlakyStart, _Starved(), cfg={"starved_stop_ms": 50})

    async def quick(ms):  # the reader's 1 s pause after an error, at once
        await real(0)

    aio.sleep_ms = quick
    try:
        try:
            aio.run(task.run())
        except MemoryError:
            pass
        else:
            raise AssertionError("the card task went on")
    finally:
        aio.sleep_ms = real
    assert status["card_out_of_memory"] == 20 and task.reader.begins > 20


def test_lending_the_reader_ends_the_count():
    task, door, status = _card_task(_Reader, _StarvedOnce(), cfg={"starved_stop_ms": 50})
    task.session.reads = 0
    task._starved, task._starved_reads = -10000, 19  # a failure long ago, one short of the stop
    task.hold = True

    async def lend_then_read():
        running = asyncio.create_task(task.run())
        await asyncio.sleep_ms(5)
        assert task._starved is None  # lent: not failing to read
        task.hold = False
        for _ in range(50):
            await asyncio.sleep_ms(2)
            if door.calls:
                break
        alive = not running.done()
        running.cancel()
        return alive

    assert asyncio.run(lend_then_read()) is True
    assert status["card_out_of_memory"] == 1 and door.calls == ["deny"]
