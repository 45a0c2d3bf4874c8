# The whitelist lookup's binary search in machine code, where the port can make it.
#
# A search step in bytecode costs ~1,500-2,000 instructions on a Cortex-M3 (a slice allocated
# and compared per step, docs/mcu.md); in viper it is a few dozen. The viper source is
# compiled here, on the device, by the port's own native emitter: every way the firmware is
# deployed (frozen in an image, .mpy files, ROMFS, source) then gets it without an
# architecture-specific mpy-cross. Where the port has no native emitter (or under CPython)
# `upper` is None and the cache uses its bytecode search, which gives the same answers.
import sys

_SOURCE = """
@micropython.viper
def upper(buf, n: int, stride: int, ref) -> int:
    p = ptr8(buf)
    r = ptr8(ref)
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        o = mid * stride
        k = 0
        c = 0
        while k < 8:
            c = int(p[o + k]) - int(r[k])
            if c != 0:
                break
            k += 1
        if c <= 0:
            lo = mid + 1
        else:
            hi = mid
    eq = 0
    if lo > 0:
        o = (lo - 1) * stride
        eq = 1
        k = 0
        while k < 8:
            if int(p[o + k]) != int(r[k]):
                eq = 0
                break
            k += 1
    return (lo << 1) | eq
"""


def _compile():
    """upper(buf, n, stride, ref): of the n sorted 8-byte keys in `buf`, `stride` bytes apart,
    how many are <= ref, times 2, plus 1 when the last of them equals ref. None: no emitter."""
    if sys.implementation.name != "micropython":
        return None
    import gc

    scope = {}
    gc.collect()  # the compiler's parse tree and leftovers go where the heap is free now,
    try:  # and are collected before the caller's long-lived objects (a cache's index) are made
        exec(_SOURCE, scope)
    except (SyntaxError, NotImplementedError, ValueError):  # no native emitter in this port
        return None
    finally:
        gc.collect()
    return scope["upper"]


upper = _compile()
