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


def _start_journal(board, cfg):
    """The journal, its recorder and (with a broker configured) the uplink."""
    from firmware import events
    from firmware.journal import Journal

    dev = getattr(board, "journal_dev", None)
    if dev is None:
        return None
    journal = Journal(dev)
    boot = getattr(board, "boot_count", 0)
    recorder = events.Recorder(journal, board.clock, boot)
    running["journal"] = journal
    running["recorder"] = recorder
    recorder.record(events.BOOT, boot)
    broker = cfg.get("broker")
    if broker:
        from firmware.uplink import Uplink

        uplink = Uplink(journal, cfg["device_id"], boot, VERSION, broker)
        recorder.listeners.append(lambda seq, code, arg: uplink.kick())
        running["uplink"] = uplink

        def on_time(epoch_ms):
            import struct

            mono = recorder.mono_s()
            board.clock.set_time(epoch_ms / 1000)
            uplink.timebase.set(epoch_ms // 1000, mono)
            status["clock_synced"] = True
            recorder.record(events.TIME_SET, 0, struct.pack("<II", epoch_ms // 1000, mono))

        uplink.on_time = on_time
    return journal


async def _journal_maintenance(journal):
    """Erase the next journal sector ahead of need, while the door is idle."""
    while True:
        journal.maintain()
        status["journal_depth"] = journal.depth()
        status["last_seq"] = journal.next_seq - 1
        await asyncio.sleep_ms(500)


def _start_door(board, cfg):
    """The door state machine bound to the board, and its patrol reports (docs/door.md)."""
    from firmware.door_task import DoorTask

    recorder = running.get("recorder")
    journal = running.get("journal")
    providers = {}
    if journal is not None:
        providers["seq"] = lambda: journal.next_seq - 1
        providers["journal_depth"] = journal.depth
    door = DoorTask(board, cfg, recorder.record if recorder else None, providers, status)
    uplink = running.get("uplink")
    if uplink is not None:
        door.publish = uplink.publish_status
    running["door"] = door
    return door


async def main(board, extra_tasks=()):
    from firmware import config

    running["board"] = board
    set_clock(board.clock)
    log("firmware", VERSION, "board", board.name)
    cfg = config.load(board.fs_root)
    running["config"] = cfg
    tasks = [asyncio.create_task(_housekeeping(board))]
    journal = _start_journal(board, cfg)
    if journal is not None:
        tasks.append(asyncio.create_task(_journal_maintenance(journal)))
    if "uplink" in running:
        tasks.append(asyncio.create_task(running["uplink"].run()))
    if getattr(board, "relay", None) is not None:
        door = _start_door(board, cfg)
        tasks.append(asyncio.create_task(door.run()))
        tasks.append(asyncio.create_task(door.run_patrol()))
    for make in extra_tasks:
        tasks.append(asyncio.create_task(make(board)))
    status["ready"] = True
    log("ready")
    await asyncio.gather(*tasks)


def run(board, extra_tasks=()):
    asyncio.run(main(board, extra_tasks))
