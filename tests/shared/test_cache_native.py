# mpy-heapsize: 160K
# The lookup's native search (offline_cache/native.py) gives the bytecode search's answers,
# on every interpreter: MicroPython compiles it with its native emitter, CPython has none.
import gc
import sys

from offline_cache import cache as cmod
from offline_cache import fmt
from host_tools import cache_build
from offline_cache.cache import Cache
from offline_cache.native import upper
from tests.scratch import fresh_dir, private_dir

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
    m = min(stride, 8)  # a record's reference, or a whole 4-byte index entry
    lo = 0
    while lo < n and buf[lo * stride:lo * stride + m] <= ref[:m]:
        lo += 1
    eq = 1 if lo and buf[(lo - 1) * stride:(lo - 1) * stride + m] == ref[:m] else 0
    if eq and m < 8:  # index entries: also how many are below ref (the first equal one)
        lt = 0
        while buf[lt * stride:lt * stride + m] < ref[:m]:
            lt += 1
        return lt * 65536 + lo * 2 + eq
    return lo * 2 + eq


def test_native_search_is_compiled_on_micropython_only():
    # Every MicroPython build we ship has a native emitter (x86, x64, armv7m, xtensawin).
    assert (upper is not None) == (sys.implementation.name == "micropython")


def _keys(rnd, n, stride):
    m = min(stride, 8)
    refs = sorted(set(bytes([rnd(2) for _ in range(6)]) + bytes([rnd(8), rnd(8)])
                      for _ in range(n)))
    buf = bytearray(len(refs) * stride)
    for i, r in enumerate(refs):
        buf[i * stride:i * stride + m] = r[:m]
        for j in range(8, stride):
            buf[i * stride + j] = 0xA5  # record bytes after the reference are not compared
    return refs, buf


def test_native_search_agrees_with_a_linear_scan():
    if upper is None:
        return  # CPython: the bytecode search, tested by the cache tests
    rnd = _rand(5)
    for stride in (4, 8, 15):  # the RAM index's 4-byte prefixes, references, records
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
    saved_index = cmod.MAX_INDEX
    cmod.MAX_INDEX = 4  # several index entries, narrowing on flash, then the buffer
    try:
        with open(d + "/in.bin", "wb") as f:
            cache_build.write(f, KEY, fmt.KIND_SNAPSHOT, 1, 0, SITE, 0xFFFF, 0, len(refs),
                      (cache_build.pack_record(r, fmt.ACTIVE, False, 0, DAY - 1, DAY + 1, 1)
                       for r in refs), {}, [])
        c = Cache(d, KEY, SITE)
        c.apply(d + "/in.bin")
    finally:
        cmod.MAX_INDEX = saved_index
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


def _agree_on(name, values, stride_cap=4):
    """A whitelist of the given 8-byte references (as ints): every probe gives the same
    lookup and decision with and without the native search. Returns the number of flash
    reads of each native decision."""
    d = fresh_dir(name)
    refs = [v.to_bytes(8, "big") for v in values]
    saved_index = cmod.MAX_INDEX
    cmod.MAX_INDEX = stride_cap  # strides of several hundred records: interpolation is tried
    try:
        with open(d + "/in.bin", "wb") as f:
            cache_build.write(f, KEY, fmt.KIND_SNAPSHOT, 1, 0, SITE, 0xFFFF, 0, len(refs),
                      (cache_build.pack_record(r, fmt.ACTIVE, False, 0, DAY - 1, DAY + 1, 1)
                       for r in refs), {}, [])
        c = Cache(d, KEY, SITE)
        c.apply(d + "/in.bin")
    finally:
        cmod.MAX_INDEX = saved_index
    probes = refs[::3] + [refs[0], refs[-1], bytes(8), b"\xff" * 8]
    probes += [r[:7] + bytes([(r[7] + 1) & 255]) for r in refs[1::4]]
    saved, read = cmod._upper, cmod.Table._read
    reads, count = [], [0]

    def counted(self, first, k):
        count[0] += 1
        return read(self, first, k)

    cmod.Table._read = counted
    try:
        for q in probes:
            answers = []
            for native in (saved, None):
                cmod._upper = native
                found = c.lookup(q)
                count[0] = 0
                answers.append((found, c.decide(q, 0, NOON)))
                if native is not None:
                    reads.append(count[0])  # the native decision's flash reads
            assert answers[0] == answers[1], q
            assert answers[0][1][0] == (q in refs), q
    finally:
        cmod._upper = saved
        cmod.Table._read = read
        c.close()
    return reads


def test_interpolated_reads_find_cards_however_the_references_are_spread():
    # The native search reads first where interpolation between two index entries points.
    # References spread evenly are found by that one read; denser at the start of a stride
    # (the guess falls after the card) or at its end (before it), the search goes on from
    # what the read showed and gives the bytecode search's answers.
    n = 520  # 3 strides of 256 records with an index of at most 4 entries
    # (Spread over the first 4 bytes, the part of a reference the RAM index keeps.)
    even = _agree_on("interp-even", [(0x012345 + 7919 * i) << 32 | i for i in range(n)])
    gc.collect()
    early = _agree_on("interp-early", [(i * i * i) << 32 for i in range(n)])
    gc.collect()
    late = _agree_on("interp-late", [(n * n * n - (n - i) ** 3) << 32 for i in range(n + 1)][1:])
    if upper is not None:  # only MicroPython interpolates: count its reads
        assert max(even) == 1
        assert max(early) > 1 and max(late) > 1


def test_index_entries_sharing_their_first_four_bytes_still_find_every_card():
    # The RAM index keeps 4 bytes of a reference: where entries share them (runs of cards with
    # one prefix across several strides, here three prefixes only), the search covers the
    # strides the run spans and still gives the bytecode search's answers, every card found.
    gc.collect()
    rnd = _rand(23)
    values = sorted(set((1 + rnd(2) % 3) << 56 | rnd(30) for _ in range(250)))
    _agree_on("index-shared-prefix", values)
    gc.collect()
    # A run of one prefix starting and ending mid-stride, among prefixes spread evenly.
    values = [0x0123456789 + (1 << 40) // 700 * i for i in range(100)]
    values += [(0x7FFFFFFF << 32) | (i * 131) for i in range(100)]
    values += [(0x80000000 + 0x10000 * i) << 32 for i in range(100)]
    _agree_on("index-run-mid-stride", sorted(values))
    gc.collect()
    _agree_on("index-run-long", sorted(values), stride_cap=16)  # a run over 3 entries and more
