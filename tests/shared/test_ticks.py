# Tick wraparound on both interpreters, against one set of vectors (tests/tick_vectors.py):
# ticks/ (time's own functions on MicroPython, the same arithmetic on CPython)
# and the tests' hand-moved clock. The board clocks: tests/device/test_board_clocks.py.
import ticks
from tests.clock import ManualClock
from tests.tick_vectors import check

P = ticks.TICKS_PERIOD


def test_the_period_is_a_power_of_two_of_at_least_2_30():
    assert P >= 1 << 30 and P & (P - 1) == 0


def test_firmware_ticks_wrap_as_micropython_does():
    check(ticks.ticks_add, ticks.ticks_diff, P)


def test_ticks_now_lie_inside_one_period():
    for now in (ticks.ticks_ms(), ticks.ticks_us()):
        assert 0 <= now < P


def test_the_tests_clock_wraps_the_same_way():
    clock = ManualClock()
    check(clock.ticks_add, clock.ticks_diff, P)


def test_a_deadline_set_just_before_the_wrap_falls_due_after_it():
    clock = ManualClock(t=P - 100)
    deadline = clock.ticks_add(clock.ticks_ms(), 250)
    assert deadline == 150
    clock.t = P - 1
    assert clock.ticks_diff(clock.ticks_ms(), deadline) < 0  # not yet
    clock.t = 149
    assert clock.ticks_diff(clock.ticks_ms(), deadline) == -1
    clock.t = 150
    assert clock.ticks_diff(clock.ticks_ms(), deadline) == 0  # due
