# Tick wraparound vectors, in terms of the period P (2**30 on CPython and on 32-bit ports such
# as the ESP32 and the unix32 image, 2**62 on the 64-bit unix port): one set for
# ticks/, the board clocks and the tests' own clock, on both interpreters.


def diffs(P):
    """(end, start, ticks_diff(end, start))"""
    H = P // 2
    return (
        (5, 3, 2),
        (3, 5, -2),
        (0, P - 1, 1),  # just past the wrap
        (P - 1, 0, -1),
        (2, P - 3, 5),
        (H - 1, 0, H - 1),  # the largest forward distance
        (H, 0, -H),  # half a period on: read as the past
        (0, H, -H),
        (0, H + 1, H - 1),
    )


def adds(P):
    """(ticks, delta, ticks_add(ticks, delta))"""
    H = P // 2
    return (
        (0, 1, 1),
        (P - 1, 1, 0),  # wraps to zero
        (P - 3, 10, 7),
        (0, -1, P - 1),
        (5, -10, P - 5),
        (0, H - 1, H - 1),
        (0, -(H - 1), H + 1),
    )


def check(add, diff, P):
    """`add`/`diff` follow MicroPython's wraparound rules for a ticks period of P."""
    H = P // 2
    for end, start, want in diffs(P):
        assert diff(end, start) == want, (end, start, diff(end, start), want)
    for t, delta, want in adds(P):
        assert add(t, delta) == want, (t, delta, add(t, delta), want)
    for t in (0, 1, H - 1, H, P - 2, P - 1):
        for delta in (0, 1, -1, 1000, -1000, H - 1, -(H - 1)):
            assert diff(add(t, delta), t) == delta, (t, delta)
            assert diff(t, add(t, delta)) == -delta, (t, delta)
    for delta in (H, -H, P, -P):  # deltas ticks_diff could not give back
        try:
            add(0, delta)
        except OverflowError:
            continue
        raise AssertionError("ticks_add(0, %d) did not overflow" % delta)
