# mpy-heapsize: 96K
# The door task's two coroutines go on after a MemoryError (an exception out of either ended
# asyncio.gather, and with it every task of the firmware): the poll loop restarts its machine
# locked (tests/shared/test_door_task_memory.py has each step), the patrol publisher counts the
# failed publish and sends again. (96K: the door task's imports are compiled from source here.)
import asyncio

from board import interface
from firmware.door import MemorySink
from firmware.door_task import DoorTask
from tests.clock import ManualClock
from wire import codes as ev


class _In:
    def __init__(self, v):
        self.v = v

    def read(self):
        return self.v


class _Out:
    def __init__(self):
        self.v = None

    def set(self, v):
        self.v = v


class _Board(interface.Board):
    def __init__(self):
        self.clock = ManualClock(t=1000)
        self.door_contact = _In("closed")
        self.rex = self.tamper = self.fire = None
        self.power = _In(True)
        self.relay = _Out()
        self.buzzer = _Out()
        self.led = _Out()


class _StarvedOnce(MemorySink):
    def __init__(self):
        MemorySink.__init__(self, 50)
        self.calls = 0

    def __call__(self, code, arg=0, payload=b"", flags=0):
        self.calls += 1
        if self.calls == 1:
            raise MemoryError("memory allocation failed, allocating 184 bytes")
        MemorySink.__call__(self, code, arg, payload, flags)


def _drive(board, task_fn, done):
    async def go():
        running = asyncio.create_task(task_fn())
        for _ in range(200):  # polls every poll_ms (20) of real time; the door's clock runs on
            board.clock.t += 10
            await asyncio.sleep_ms(5)
            if done():
                break
        alive = not running.done()
        running.cancel()
        return alive

    return asyncio.run(go())


def test_the_poll_loop_goes_on_after_a_memory_error():
    board = _Board()
    sink = _StarvedOnce()
    t = DoorTask(board, {"door": {"debounce_ms": 20}}, sink, None, {})
    board.door_contact.v = "open"  # its door_opened finds no heap
    assert _drive(board, t.run, lambda: ev.FORCED_OPEN in sink.codes()) is True
    assert t.status["door_out_of_memory"] == 1
    assert ev.FORCED_OPEN in sink.codes() and board.relay.v is False


def test_the_patrol_publisher_goes_on_after_a_memory_error():
    board = _Board()
    t = DoorTask(board, {}, MemorySink(), None, {})
    sent = []

    async def publish(report):
        sent.append(report)
        if len(sent) == 1:
            raise MemoryError("memory allocation failed, allocating 96 bytes")
        return True

    t.publish = publish
    t.poll(board.clock.t)  # the first report is due at start

    async def go():
        running = asyncio.create_task(t.run_patrol())
        for _ in range(150):  # the retry comes after 1 s
            await asyncio.sleep_ms(10)
            if len(sent) >= 2:
                break
        alive = not running.done()
        running.cancel()
        return alive

    assert asyncio.run(go()) is True
    assert len(sent) == 2 and t.status["patrol_out_of_memory"] == 1
