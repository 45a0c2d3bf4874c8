# The device log's ring on both interpreters: lines kept in order, the oldest dropped once
# the ring holds RING_CHARS of text, the last line always kept.

import gc

from firmware import log


def _reset():
    log.clear()
    log.set_console(False)
    log.set_clock(None)


def test_lines_come_back_in_order():
    _reset()
    log.log("uplink:", "connected")
    log.log("cards:", 3, "refused")
    assert log.lines() == ["0 uplink: connected", "0 cards: 3 refused"]
    log.set_console(True)


def test_the_oldest_lines_go_once_the_ring_holds_its_text():
    _reset()
    for i in range(200):
        log.log("line", i, "x" * (i % 37))
    got = log.lines()
    first = int(got[0].split()[2])
    assert got == ["0 line %d %s" % (i, "x" * (i % 37)) for i in range(first, 200)]
    held = sum(len(x) + 1 for x in got)  # each line and its end
    assert held == log._held[0] and log.RING_CHARS - 50 < held <= log.RING_CHARS
    log.set_console(True)


def test_a_line_longer_than_the_ring_is_kept_alone():
    _reset()
    log.log("a")
    log.log("y" * (2 * log.RING_CHARS))
    assert log.lines() == ["0 " + "y" * (2 * log.RING_CHARS)]
    log.log("b")
    assert log.lines() == ["0 b"]
    log.set_console(True)


def test_lines_with_any_text_come_back_whole_as_the_ring_turns():
    _reset()
    sent = []
    for i in range(120):
        line = "\u00e9t\u00e9 %d %s" % (i, "\u2192" * (i % 23))  # characters of 2 and 3 bytes
        log.log(line)
        sent.append("0 " + line)
    got = log.lines()
    assert got == sent[len(sent) - len(got):] and len(got) > 5
    sent = got = None
    gc.collect()  # room for the next line in one piece (this test's heap is small)
    want = "0 " + "z" * (log.RING_CHARS - 3)  # with its end: exactly the ring
    log.log(want[2:])
    assert log.lines() == [want]
    log.set_console(True)


def test_a_nul_in_a_line_does_not_split_it():
    # NUL ends a line in the ring: one inside a line (a hostile topic, say) made two lines of
    # it, the second with no time stamp.
    _reset()
    log.log("uplink: topic", "a\0b")
    log.log("next")
    assert log.lines() == ["0 uplink: topic a?b", "0 next"]
    log.set_console(True)


class _NoHeap:
    """A part whose text finds no heap, as any part's can on a fragmented heap."""

    def __str__(self):
        raise MemoryError("memory allocation failed, allocating 48 bytes")


def test_a_line_that_finds_no_heap_is_dropped_and_counted_not_raised():
    _reset()
    log.log("kept")
    before = log.dropped()
    log.log("cards: reader:", _NoHeap())  # out of a task's except clause, this ended them all
    assert log.dropped() == before + 1
    assert log.lines() == ["0 kept"]
    log.log("after")
    assert log.lines() == ["0 kept", "0 after"]
    log.set_console(True)
