# mpy-heapsize: 60K
# A 100,000-card cache lives its whole cycle in a 60 KiB heap (the door's budget is 64 KiB:
# the rest is margin; 56K left no room to fragment once the test's whitelist builder became a
# host module of its own, 0.7 KiB more on this port, where the bytecode is in the heap too): a
# snapshot received and installed, lookups, the cache reopened as at the next boot, a
# 1,000-change delta, the idle merge and the reopen after it. A door at its budget must not
# fail its first merge after an update: once the cache is open, its maintenance asks the heap
# for no piece larger than its read buffer, so a heap fragmented by hours of traffic still
# merges (a merge that reallocated the 3 KiB index failed in the benchmark's heap).
import gc
import os
import vfs

from board.vdev.flashsim import FlashSim, mount
from offline_cache import fmt
from host_tools import cache_build
from offline_cache.cache import Cache

MNT = "/fl"
DIR = MNT + "/wl"
KEY = b"k" * 32
SITE = 1
DAY = 20000
NOON = DAY * 86400 + 12 * 3600
N = 100000
STEP = 4  # card i has reference 4*i: a delta adds cards between them
EVERY = 200  # the delta revokes every 200th card and adds one card after each
SCHED = {1: [(0x7F, 0, 1440)]}


def ref(n):
    return n.to_bytes(8, "big")


def rec(n, status=fmt.ACTIVE):
    return cache_build.pack_record(ref(n), status, False, 0, DAY - 5, DAY + 5, 1)


def snapshot():
    for i in range(N):
        yield rec(STEP * i)


def delta():
    for i in range(0, N, EVERY):
        yield rec(STEP * i, fmt.LOST)
        yield rec(STEP * i + 1)


def receive(c, kind, version, base, count, records):
    """Stream an update into the cache's incoming file as the uplink does, then apply it."""
    with open(c.incoming_path(), "wb") as f:
        cache_build.write(f, KEY, kind, version, base, SITE, 1, 0, count, records, SCHED, [])
    return c.apply(c.incoming_path())


def fragment(hole):
    """Fill the heap with pieces of `hole` bytes, then free every other one: half the free
    memory stays free, in holes no larger than that."""
    gc.collect()
    pieces = []
    try:
        while True:
            pieces.append(bytearray(hole))
    except MemoryError:
        pass
    for i in range(0, len(pieces), 2):
        pieces[i] = None
    gc.collect()
    return pieces


def check(c, version, count):
    assert c.error is None and c.version == version, (c.error, c.version)
    assert c.main.hdr.count == count
    for i in (0, 1, 199, 12345, 99800, N - 1):
        want = "lost" if version > 1 and i % EVERY == 0 else "granted"
        assert c.decide(ref(STEP * i), 0, NOON)[1] == want, (i, version)
    added = "granted" if version > 1 else "unknown"
    assert c.decide(ref(STEP * 400 + 1), 0, NOON)[1] == added
    assert c.decide(ref(STEP * 400 + 2), 0, NOON)[1] == "unknown"
    assert c.decide(ref(STEP * N), 0, NOON)[1] == "unknown"


def test_100k_snapshot_reboot_delta_merge_in_60k_fragmented():
    dev = FlashSim(path=os.getenv("MPY_TEST_TMP") + "/cache.img", block_size=4096,
                   block_count=1024)
    vfs.VfsLfs2.mkfs(dev)
    mount(dev, MNT)
    try:
        os.mkdir(DIR)
        c = Cache(DIR, KEY, SITE)
        assert receive(c, fmt.KIND_SNAPSHOT, 1, 0, N, snapshot()) == 1
        check(c, 1, N)
        c.close()
        c = None  # a reboot: the door has one cache at a time
        c = Cache(DIR, KEY, SITE)
        check(c, 1, N)
        held = fragment(1024)
        assert len(held) > 2, "the heap had no room left to fragment"
        assert receive(c, fmt.KIND_DELTA, 2, 1, 2 * N // EVERY, delta()) == 2
        assert c.overlay is not None
        check(c, 2, N)
        index = c.main.index
        assert c.maintain()  # merge, then reopen
        assert c.overlay is None
        assert c.main.index is index  # reused, not asked of the fragmented heap again
        check(c, 2, N + N // EVERY)
        c.close()
    finally:
        vfs.umount(MNT)
