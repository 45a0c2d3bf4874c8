# mpy-heapsize: 96K
# `journal_near_full` is journaled when the journal crosses its threshold, not at every boot.
from board.vdev.flashsim import FlashSim
from firmware.events import Recorder
from wire import codes as events
from firmware.journal import Journal
from journal_format import R_CODE


class Clock:
    trusted = False  # never set

    def ticks_ms(self):
        return 0

    def ticks_diff(self, a, b):
        return a - b

    def time(self):
        return None


def _near_full_records(j):
    return [r for r in j.read(1, 1000) if r[R_CODE] == events.JOURNAL_NEAR_FULL]


def test_near_full_is_recorded_on_the_crossing_only_and_not_again_after_a_reboot():
    dev = FlashSim(path=None, block_size=1024, block_count=8)  # 6 data sectors of 31
    j = Journal(dev, near_full_ratio=0.5)
    rec = Recorder(j, Clock(), 1)
    while not j.near_full():
        rec.record(events.DOOR_OPENED)
    rec.record(events.DOOR_CLOSED)
    assert len(_near_full_records(j)) == 1
    for boot in (2, 3, 4):  # reboots with the journal still near full
        j = Journal(dev, near_full_ratio=0.5)
        rec = Recorder(j, Clock(), boot)
        rec.record(events.BOOT, boot)
        rec.record(events.DOOR_OPENED)
    assert len(_near_full_records(j)) == 1
    # Below the threshold (acknowledged), then above it again: a new crossing, recorded.
    j.ack(j.next_seq - 1)
    rec.record(events.DOOR_CLOSED)
    while not j.near_full():
        rec.record(events.DOOR_OPENED)
    assert len(_near_full_records(j)) == 2


def test_a_listener_out_of_heap_after_the_append_does_not_make_the_event_look_lost():
    """The record is journaled once the append returns: a MemoryError after it (a listener,
    the near-full report's payload) reaching the caller would have the event made again."""
    dev = FlashSim(path=None, block_size=1024, block_count=8)
    j = Journal(dev, near_full_ratio=0.5)
    rec = Recorder(j, Clock(), 1)
    kicked = []

    def starved(seq, code, arg):
        raise MemoryError("memory allocation failed, allocating 16 bytes")

    rec.listeners.append(starved)
    rec.listeners.append(lambda seq, code, arg: kicked.append(seq))
    seq = rec.record(events.ACCESS_GRANTED, 1)
    assert [r[R_CODE] for r in j.read(1, 10)] == [events.ACCESS_GRANTED]
    assert seq == j.next_seq - 1
    rec.listeners.remove(starved)
    rec.record(events.DOOR_OPENED)
    assert kicked == [seq + 1]


def test_a_near_full_report_out_of_heap_is_made_with_the_next_record():
    dev = FlashSim(path=None, block_size=1024, block_count=8)
    j = Journal(dev, near_full_ratio=0.5)
    rec = Recorder(j, Clock(), 1)
    depth = j.depth
    starve = [1]

    def starved_depth():
        d = depth()
        if starve[0] and d >= j.near_full_at:
            starve[0] = 0
            raise MemoryError("memory allocation failed, allocating 16 bytes")
        return d

    j.depth = starved_depth
    while not j.near_full():
        rec.record(events.DOOR_OPENED)  # the crossing's report finds no heap: not raised
    assert starve == [0] and _near_full_records(j) == []
    rec.record(events.DOOR_CLOSED)
    assert len(_near_full_records(j)) == 1
