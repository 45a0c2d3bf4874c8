# The device log's ring on both interpreters: lines kept in order, the oldest dropped once
# the ring holds RING_CHARS of text, the last line always kept.

from firmware import log


def _reset():
    del log._ring[:]
    log._held[0] = 0
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
    held = sum(len(x) for x in got)
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
