# mpy-heapsize: 160K
# The lookup's native search (offline_cache/native.py) gives the bytecode search's answers,
# on every interpreter: MicroPython compiles it with its native emitter, CPython has none.
import sys

from offline_cache import cache as cmod
from offline_cache import fmt
from offline_cache.cache import Cache
from offline_cache.native import upper
from tests.scratch import private_dir

KEY = b"n" * 32
SITE = 7
DAY = 20000
NOON = DAY * 86400 + 12 * 3600


def _rand(seed):
    """A small deterministic generator (the same keys on both interpreters)."""
    x = [seed]

    def nxt(bits):
        x[0] = (x[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return x[0] >> (31 - bits)
    return nxt


def _reference_upper(buf, n, stride, ref):
    lo = 0
    while lo < n and buf[lo * stride:lo * stride + 8] <= ref:
        lo += 1
    eq = 1 if lo and buf[(lo - 1) * stride:(lo - 1) * stride + 8] == ref else 0
    return lo * 2 + eq


def test_native_search_is_compiled_on_micropython_only():
    # Every MicroPython build we ship has a native emitter (x86, x64, armv7m, xtensawin).
    assert (upper is not None) == (sys.implementation.name == "micropython")


def _keys(rnd, n, stride):
    refs = sorted(set(bytes([rnd(2) for _ in range(6)]) + bytes([rnd(8), rnd(8)])
                      for _ in range(n)))
    buf = bytearray(len(refs) * stride)
    for i, r in enumerate(refs):
        buf[i * stride:i * stride + 8] = r
        for j in range(8, stride):
            buf[i * stride + j] = 0xA5  # record bytes after the reference are not compared
    return refs, buf


def test_native_search_agrees_with_a_linear_scan():
    if upper is None:
        return  # CPython: the bytecode search, tested by the cache tests
    rnd = _rand(5)
    for stride in (8, 15):
        for n in (0, 1, 2, 7, 64):
            refs, buf = _keys(rnd, n, stride)
            probes = list(refs)
            probes += [bytes(8), b"\xff" * 8]
            probes += [r[:7] + bytes([(r[7] + 1) & 255]) for r in refs]
            probes += [r[:7] + bytes([(r[7] - 1) & 255]) for r in refs]
            for q in probes:
                assert upper(buf, len(refs), stride, q) == \
                    _reference_upper(buf, len(refs), stride, q), (stride, n, q)


def test_cache_lookups_are_the_same_with_and_without_the_native_search():
    import os

    d = private_dir("cache-native")
    try:
        os.mkdir(d)
    except OSError:
        pass
    rnd = _rand(11)
    refs, v = [], 0
    for _ in range(300):  # sorted, with gaps (so near misses exist), sharing long prefixes
        v += 1 + rnd(4)
        refs.append(bytes([0, 0, 0, 0, v >> 24 & 255, v >> 16 & 255, v >> 8 & 255, v & 255]))
    cmod.MAX_INDEX = 4  # several index entries, narrowing on flash, then the buffer
    try:
        with open(d + "/in.bin", "wb") as f:
            fmt.write(f, KEY, fmt.KIND_SNAPSHOT, 1, 0, SITE, 0xFFFF, 0, len(refs),
                      (fmt.pack_record(r, fmt.ACTIVE, False, 0, DAY - 1, DAY + 1, 1)
                       for r in refs), {}, [])
        c = Cache(d, KEY, SITE)
        c.apply(d + "/in.bin")
    finally:
        cmod.MAX_INDEX = 512
    probes = refs[::7] + [refs[0], refs[-1], bytes(8), b"\xff" * 8]
    probes += [r[:7] + bytes([(r[7] + 1) & 255]) for r in refs[::5]]
    saved = cmod._upper
    try:
        for q in probes:
            answers = []
            for native in (saved, None):
                cmod._upper = native
                answers.append((c.lookup(q), c.decide(q, 0, NOON)))
            assert answers[0] == answers[1], q
            assert answers[0][1][0] == (q in refs), q
    finally:
        cmod._upper = saved
    c.close()
