"""The whitelist lookup's binary search in machine code, where the port can make it.

A search step in bytecode costs ~1,500-2,000 instructions on a Cortex-M3 (a slice allocated
and compared per step, docs/mcu.md); in viper it is a few dozen. The viper source is
compiled here, on the device, by the port's own native emitter: every way the firmware is
deployed (frozen in an image, .mpy files, ROMFS, source) then gets it without an
architecture-specific mpy-cross. Where the port has no native emitter (or under CPython)
`upper` is None and the cache uses its bytecode search, which gives the same answers."""
import sys

_SOURCE = """
@micropython.viper
def upper(buf, n: int, stride: int, ref) -> int:
    p = ptr8(buf)
    r = ptr8(ref)
    m = 8
    if stride < 8:
        m = stride
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        o = mid * stride
        k = 0
        c = 0
        while k < m:
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
        while k < m:
            if int(p[o + k]) != int(r[k]):
                eq = 0
                break
            k += 1
    if eq and m < 8:
        lt = lo - 1
        while lt > 0:
            o = (lt - 1) * stride
            k = 0
            while k < m:
                if int(p[o + k]) != int(r[k]):
                    break
                k += 1
            if k < m:
                break
            lt -= 1
        return (lt << 16) | (lo << 1) | eq
    return (lo << 1) | eq

@micropython.viper
def guess(buf, n: int, ref, stride: int) -> int:
    p = ptr8(buf)
    r = ptr8(ref)
    o = n * 4
    mid = o + 4
    k = 0
    while k < 3:
        if p[o + k] != p[mid + k]:
            break
        k += 1
    lo = int(p[o + k]) << 16
    hi = int(p[mid + k]) << 16
    c = int(r[k]) << 16
    if k < 3:
        lo |= int(p[o + k + 1]) << 8
        hi |= int(p[mid + k + 1]) << 8
        c |= int(r[k + 1]) << 8
    if k < 2:
        lo |= int(p[o + k + 2])
        hi |= int(p[mid + k + 2])
        c |= int(r[k + 2])
    if c <= lo:
        return 0
    if c >= hi:
        return stride - 1
    eq = (hi - lo) // stride
    if eq == 0:
        return (c - lo) * stride // (hi - lo)
    c = (c - lo) // eq
    if c >= stride:
        return stride - 1
    return c
"""


def _compile():
    """(upper, guess), or (None, None) where there is no emitter.

    upper(buf, n, stride, ref): of the n sorted keys in `buf`, `stride` bytes apart, how many
    are <= ref, times 2, plus 1 when the last of them equals ref. A key is the first 8 bytes
    at its place (a record's reference), or all `stride` bytes when fewer (the RAM index's
    4-byte entries), compared with as many first bytes of ref; for those, when the last equals
    ref, plus how many are < ref times 65536 (n < 32768: the first of the equal keys, found
    without allocating).
    guess(buf, n, ref, stride): where in [0, stride) `ref` falls between the 4-byte keys n and
    n + 1 of `buf` (buf[n] < ref's first 4 bytes < buf[n + 1]) if the stride's keys are evenly
    spread, by linear interpolation on the 24 bits after the two keys' common prefix (at most
    3 bytes; bytes past the first 4 count as 0, ref's included: it may be 4 bytes long).
    Only a starting point: the search checks what it reads there. Its names are upper's
    (each new name would be one more string interned in the heap, where the source is
    compiled)."""
    if sys.implementation.name != "micropython":
        return None, None
    import gc

    scope = {}
    gc.collect()  # the compiler's parse tree and leftovers go where the heap is free now,
    try:  # and are collected before the caller's long-lived objects (a cache's index) are made
        exec(_SOURCE, scope)
    except (SyntaxError, NotImplementedError, ValueError):  # no native emitter in this port
        return None, None
    finally:
        gc.collect()
    return scope["upper"], scope["guess"]


upper, guess = _compile()
