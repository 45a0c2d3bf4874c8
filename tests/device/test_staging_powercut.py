# Commissioning as one transaction (firmware/staging.py) on littlefs on the NOR-flash
# simulator: a power cut at every flash operation of the whole transaction (staging the files,
# the commit record, and the boot that applies it, itself cut at every operation) leaves a
# door whose identity, keys, broker, TLS files and whitelist all belong to the old
# commissioning or all to the new one, with no temporary file left behind.
import gc
import json
import os
import vfs

from board.vdev.flashsim import FlashSim, PowerCut, mount
from firmware import staging

MNT = "/lfs"
BS, BLOCKS = 512, 64


def _img():
    p = os.getenv("MPY_TEST_TMP") + "/stage.img"
    try:
        os.remove(p)
    except OSError:
        pass
    return p


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _door(site):
    """The files of a door commissioned for `site` (the whitelist spans several blocks)."""
    files = {
        "config.json": json.dumps({"device_id": "d%d" % site, "site_id": site}).encode(),
        "keys.json": json.dumps({"site_id": site, "keys": {"cache": "%02x" % site * 32}}).encode(),
        "ca.pem": b"-----BEGIN CERTIFICATE----- site %d" % site,
        "cache/main.bin": (b"whitelist of site %d;" % site) * 90,
    }
    return files


OLD = _door(1)
NEW = _door(2)
OLD_ONLY = {"client.key": b"old client key", "client.crt": b"old client cert",
            "cache/overlay.bin": b"old pending changes", "cache/floor": b"7"}
REMOVE = ["client.crt", "client.key", "cache/overlay.bin", "cache/floor"]


def _setup(dev):
    vfs.VfsLfs2.mkfs(dev)
    mount(dev, MNT)
    os.mkdir(MNT + "/cache")
    for name, data in list(OLD.items()) + list(OLD_ONLY.items()):
        _write(MNT + "/" + name, data)
    vfs.umount(MNT)


def _transaction():
    """What `doorctl commission` does on the door, in order (host_tools/door_stage.py)."""
    for name, data in NEW.items():
        _write(MNT + "/" + name + staging.SUFFIX, data)
    plan = {"put": list(NEW), "remove": REMOVE}
    _write(MNT + "/stage.json.tmp", json.dumps(plan).encode())
    os.rename(MNT + "/stage.json.tmp", MNT + "/" + staging.RECORD)
    staging.complete(MNT)  # the boot that follows


def _which():
    """'old' or 'new' when every file is one door's; fails on any mix."""
    now = {n: _read(MNT + "/" + n) for n in NEW}
    if now == OLD:
        for n, data in OLD_ONLY.items():
            assert _read(MNT + "/" + n) == data, n
        return "old"
    assert now == NEW, [n for n in NEW if now[n] not in (OLD[n], NEW[n])] or now
    for n in OLD_ONLY:
        assert _read(MNT + "/" + n) is None, n
    assert staging.pending(MNT) is None
    return "new"


def _count_ops(path):
    dev = FlashSim(path=path, block_size=BS, block_count=BLOCKS)
    _setup(dev)
    start = dev.ops
    mount(dev, MNT, mkfs_if_needed=False)
    _transaction()
    vfs.umount(MNT)
    n = dev.ops - start
    dev.close()
    return n


def _boot(path, cut=None):
    """A boot: mount, finish a committed transaction; with `cut`, the power goes again."""
    dev = FlashSim(path=path, block_size=BS, block_count=BLOCKS)
    mount(dev, MNT, mkfs_if_needed=False)
    if cut is not None:
        dev.cut_after(cut)
    try:
        staging.complete(MNT)
        cut_hit = False
    except PowerCut:
        cut_hit = True
    try:
        vfs.umount(MNT)
    except (OSError, PowerCut):
        pass
    dev.close()
    gc.collect()
    return cut_hit


def test_power_cut_at_every_write_of_a_commissioning():
    path = _img()
    total = _count_ops(path)
    seen = {"old": 0, "new": 0}
    twice = 0
    for cut in range(1, total + 1):
        dev = FlashSim(path=path, block_size=BS, block_count=BLOCKS)
        _setup(dev)
        mount(dev, MNT, mkfs_if_needed=False)
        dev.cut_after(cut)
        try:
            _transaction()
            raise AssertionError("the transaction ran past its cut point %d" % cut)
        except PowerCut:
            pass
        try:
            vfs.umount(MNT)
        except (OSError, PowerCut):
            pass
        dev.close()
        gc.collect()
        # The boot after the cut is cut too, at its first, second, ... write, until one
        # completes: each boot leaves the old door or the new one.
        again = 1
        while _boot(path, again):
            twice += 1
            again += 1
            dev = FlashSim(path=path, block_size=BS, block_count=BLOCKS)
            mount(dev, MNT, mkfs_if_needed=False)
            if staging.pending(MNT) is None:  # else the next boot goes on with it
                _which()
            vfs.umount(MNT)
            dev.close()
        _boot(path)
        dev = FlashSim(path=path, block_size=BS, block_count=BLOCKS)
        mount(dev, MNT, mkfs_if_needed=False)
        seen[_which()] += 1
        for leftover in ("keys.json.tmp", "config.json.tmp"):
            assert _read(MNT + "/" + leftover) is None, leftover
        vfs.umount(MNT)
        dev.close()
    print("%d cut points: old door after %d, new door after %d; %d boots cut as well"
          % (total, seen["old"], seen["new"], twice))
    assert seen["old"] and seen["new"]


def test_an_uncommitted_stage_is_ignored_and_old_temporaries_are_removed():
    path = _img()
    dev = FlashSim(path=path, block_size=BS, block_count=BLOCKS)
    _setup(dev)
    mount(dev, MNT, mkfs_if_needed=False)
    _write(MNT + "/keys.json.stage", NEW["keys.json"])  # staged, never committed
    _write(MNT + "/keys.json.tmp", b"{half a key file")  # from an older tool
    assert staging.complete(MNT) == -1
    assert _which() == "old"
    assert _read(MNT + "/keys.json.tmp") is None
    vfs.umount(MNT)
    dev.close()
