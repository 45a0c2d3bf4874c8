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
