"""Firmware entry: binds a board to the application tasks and runs them forever."""

import asyncio
import gc

from firmware import VERSION
from firmware.log import log, set_clock

# Filled in by the running firmware; read by patrol reports, the console and benchmarks.
status = {"version": VERSION, "ready": False, "heap_free": 0, "heap_peak_alloc": 0}
# The running firmware's objects, for the console (self-test, diagnostics).
running = {}


async def _housekeeping(board):
    """Collect garbage at a quiet moment and keep heap figures for the status report."""
    while True:
        gc.collect()
        free, alloc = gc.mem_free(), gc.mem_alloc()
        status["heap_free"] = free
        if alloc > status["heap_peak_alloc"]:
            status["heap_peak_alloc"] = alloc
        await asyncio.sleep_ms(1000)


async def main(board, extra_tasks=()):
    running["board"] = board
    set_clock(board.clock)
    log("firmware", VERSION, "board", board.name)
    tasks = [asyncio.create_task(_housekeeping(board))]
    for make in extra_tasks:
        tasks.append(asyncio.create_task(make(board)))
    status["ready"] = True
    log("ready")
    await asyncio.gather(*tasks)


def run(board, extra_tasks=()):
    asyncio.run(main(board, extra_tasks))
