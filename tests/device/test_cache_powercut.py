# mpy-heapsize: 68K
# (68K on the 64-bit interpreter: the cache's compiled search, offline_cache/native.py, adds
# about 1.5 KiB of module there, which the default 64K of this many reboots did not leave.)
# The whitelist cache on littlefs on the NOR-flash simulator: a power cut at every flash
# operation of a delta apply, a snapshot load and a merge leaves a cache that verifies as the
# old or the new version (never a mix), with the decisions of that version.
import gc
import os
import vfs

from board.vdev.flashsim import FlashSim, PowerCut, mount
from offline_cache import fmt
from host_tools import cache_build
from offline_cache.cache import Cache
from host_tools.cache_build import pack_record

MNT = "/lfs"
DIR = MNT + "/wl"
KEY = b"p" * 32
SITE = 3
DAY = 20000
NOON = DAY * 86400 + 12 * 3600
GEOMETRY = [512, 48]  # block size, block count (one test switches to 4 KiB blocks)
N = 160  # cards: files of 2.4 KiB, several blocks, so each write is many flash ops
SCHED = {1: [(0x7F, 0, 1440)]}


def ref(i):
    return b"card%04d" % i


def card(i, status=fmt.ACTIVE):
    return pack_record(ref(i), status, False, 0, DAY - 5, DAY + 5, 1)


def load_snap(c, version, ids):
    """Receive a snapshot into the cache's incoming file (streamed, as the uplink does), apply."""
    with open(c.incoming_path(), "wb") as f:
        cache_build.write(f, KEY, fmt.KIND_SNAPSHOT, version, 0, SITE, 1, 0, len(ids),
                  (card(i) for i in ids), SCHED, [])
    return c.apply(c.incoming_path())


def delta(version, base, recs):
    return cache_build.build(KEY, fmt.KIND_DELTA, version, base, SITE, 1, 0, recs, SCHED, [])


def _tmp(name):
    return os.getenv("MPY_TEST_TMP") + "/" + name


def _copy(src, dst):
    buf = bytearray(512)
    with open(src, "rb") as a, open(dst, "wb") as b:
        while True:
            n = a.readinto(buf)
            if not n:
                break
            b.write(buf[:n] if n < 512 else buf)


def _umount():
    try:
        vfs.umount(MNT)
    except (OSError, PowerCut):
        pass


# Version 1: cards 0..N-1; version 2 (overlay): card 1 lost, card 2 removed, card 40 added.
# The updates under test: delta 3 (card 3 lost, card 1 active again, card 41 added), merged
# with the overlay; snapshot 4 (cards 20..N+29); the merge of the overlay into the sorted file.
def _granted(version, i):
    if version == 4:
        return 20 <= i < N + 30
    if version == 1:
        return i < N
    if version == 2:
        return (i < N and i not in (1, 2)) or i == N + 40
    return (i < N and i not in (2, 3)) or i in (N + 40, N + 41)


def _check(c, versions):
    assert c.error is None, c.error
    assert c.version in versions, (c.version, versions)
    for i in (0, 1, 2, 3, 25, N + 40, N + 41, N - 1, N + 29, N + 30):
        assert c.decide(ref(i), 0, NOON)[0] == _granted(c.version, i), (c.version, i)
    return c.version


def _base_image():
    path = _tmp("base.img")
    dev = FlashSim(path=path, block_size=GEOMETRY[0], block_count=GEOMETRY[1])
    vfs.VfsLfs2.mkfs(dev)
    mount(dev, MNT)
    os.mkdir(DIR)
    c = Cache(DIR, KEY, SITE)
    load_snap(c, 1, range(N))
    c.apply_bytes(delta(2, 1, [card(1, fmt.LOST), pack_record(ref(2), 0, 0, 0, 0, 0, 0, True),
                               card(N + 40)]))
    _check(c, (2,))
    c.close()
    vfs.umount(MNT)
    dev.close()
    return path


def _op_delta(c):
    c.apply_bytes(delta(3, 2, [card(1), card(3, fmt.LOST), card(N + 41)]))


def _op_snapshot(c):
    load_snap(c, 4, range(20, N + 30))


def _op_merge(c):
    c.maintain()  # nothing to do once merged


def _every_cut(op, new_version, landed=None):
    base = _base_image()
    path = _tmp("cut.img")
    _copy(base, path)
    dev = FlashSim(path=path, block_size=GEOMETRY[0], block_count=GEOMETRY[1])
    mount(dev, MNT, mkfs_if_needed=False)
    c = Cache(DIR, KEY, SITE)
    start = dev.ops
    op(c)
    total = dev.ops - start
    c.close()
    vfs.umount(MNT)
    dev.close()
    seen = {}
    for cut in range(total):
        c = None  # a reboot: the door has one cache at a time
        _copy(base, path)
        dev = FlashSim(path=path, block_size=GEOMETRY[0], block_count=GEOMETRY[1])
        mount(dev, MNT, mkfs_if_needed=False)
        c = Cache(DIR, KEY, SITE)
        dev.cut_after(cut + 1, landed)
        try:
            op(c)
            raise AssertionError("ran past cut %d" % cut)
        except PowerCut:
            pass
        c = None
        _umount()
        dev.close()
        gc.collect()
        dev = FlashSim(path=path, block_size=GEOMETRY[0], block_count=GEOMETRY[1])
        mount(dev, MNT, mkfs_if_needed=False)
        c = Cache(DIR, KEY, SITE)
        v = (_check(c, (2, new_version)), c.overlay is not None)
        seen[v] = seen.get(v, 0) + 1
        # still takes the update after the reboot (or refuses it as already there)
        try:
            op(c)
        except fmt.CacheError as e:
            assert e.reason == "stale_version" and c.version == new_version
        _check(c, (new_version,))
        assert c.overlay is None or new_version == 3
        c.close()
        vfs.umount(MNT)
        dev.close()
    print("%d-byte blocks, torn op lands %s: %d cut points; (version, overlay) after reboot: %s"
          % (GEOMETRY[0], landed, total, seen))
    assert len(seen) == 2  # both outcomes met: cut before and after the commit point


def test_power_cut_at_every_write_of_a_delta_apply():
    _every_cut(_op_delta, 3)
    _every_cut(_op_delta, 3, 0)
    _every_cut(_op_delta, 3, 10000)


def test_power_cut_at_every_write_of_a_snapshot_load():
    _every_cut(_op_snapshot, 4)
    _every_cut(_op_snapshot, 4, 0)
    _every_cut(_op_snapshot, 4, 10000)


def test_power_cut_at_every_write_of_a_merge():
    _every_cut(_op_merge, 2)


def test_power_cut_at_every_write_on_4k_blocks():
    GEOMETRY[0], GEOMETRY[1] = 4096, 16
    try:
        _every_cut(_op_snapshot, 4)
        _every_cut(_op_delta, 3)
        _every_cut(_op_merge, 2)
    finally:
        GEOMETRY[0], GEOMETRY[1] = 512, 48
