# mpy-heapsize: 160K
# A MemoryError in the uplink's session ends that session only (the journal keeps every
# event; it connects again) and is counted in the status, where the image soak reads it: a
# MemoryError recovered from is still one the soak's claim does not allow. (160K: the uplink's
# imports are compiled from source here, as in tests/shared/test_uplink_ack.py.)
import asyncio

from board.vdev.flashsim import FlashSim
from firmware.journal import Journal
from firmware.uplink import Uplink


def test_a_session_that_runs_out_of_heap_is_counted_and_the_uplink_goes_on():
    status = {}
    j = Journal(FlashSim(path=None, block_size=1024, block_count=8))
    up = Uplink(j, "site.b1.d1", 3, "0", {"host": "127.0.0.1"}, status=status)
    assert status["uplink_out_of_memory"] == 0  # there from the start: counting allocates nothing
    sessions = []

    async def session():
        sessions.append(1)
        if len(sessions) == 1:
            raise MemoryError("memory allocation failed, allocating 1024 bytes")
        await asyncio.sleep_ms(10_000)

    up._session = session

    async def go():
        running = asyncio.create_task(up.run())
        for _ in range(50):
            await asyncio.sleep_ms(10)
            if status["uplink_out_of_memory"]:
                break
        alive = not running.done()
        running.cancel()
        return alive

    assert asyncio.run(go()) is True
    assert status["uplink_out_of_memory"] == 1 and sessions == [1]


def test_the_uplink_outlives_a_memory_error_in_what_follows_a_failed_session():
    # A heap in pieces can refuse the bookkeeping after a failed attempt as well (its reason,
    # a new status key): that MemoryError escaped run() and stopped the firmware, a door cut
    # off for good (the image soak at 68 KiB). It is counted and the uplink tries again.
    status = {}
    j = Journal(FlashSim(path=None, block_size=1024, block_count=8))
    up = Uplink(j, "site.b1.d1", 3, "0", {"host": "127.0.0.1"}, status=status)
    sessions = []

    async def session():
        sessions.append(1)
        if len(sessions) == 1:
            raise OSError(111)  # refused: the bookkeeping below then runs

    def failed(why, tls_failure=False):
        raise MemoryError("memory allocation failed, allocating 296 bytes")

    up._session = session
    up._failed = failed

    async def go():
        running = asyncio.create_task(up.run())
        for _ in range(300):
            await asyncio.sleep_ms(10)
            if len(sessions) >= 2:
                break
        alive = not running.done()
        running.cancel()
        return alive

    assert asyncio.run(go()) is True
    assert len(sessions) >= 2 and status["uplink_out_of_memory"] == 1


def test_the_reconnect_wait_asks_nothing_of_the_heap_however_long():
    # Computed in the uplink's last resort after a MemoryError: from the sixth attempt on
    # (32 s) the jitter's product passed 2**30, a long int that needs the heap.
    import micropython

    from firmware.mqtt import Backoff

    b = Backoff()
    for _ in range(20):
        base = min(b.cap_ms, b.first_ms << min(b.attempt, 16))
        micropython.heap_lock()
        try:
            ms = b.next_ms()
        finally:
            micropython.heap_unlock()
        assert base * 3 // 4 <= ms <= base * 5 // 4, (base, ms)
    assert base == 60000
