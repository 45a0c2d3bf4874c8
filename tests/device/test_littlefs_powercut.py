# littlefs (vfs.VfsLfs2) on the NOR-flash simulator survives a power cut at every operation
# of a small workload: it always mounts, every file holds its old or its new content, and the
# filesystem stays writable. Also measures what each kind of file operation costs the flash.
import gc
import os
import vfs

from board.vdev.flashsim import FlashSim, PowerCut, mount

MNT = "/lfs"


def _img():
    p = os.getenv("MPY_TEST_TMP") + "/lfs.img"
    try:
        os.remove(p)
    except OSError:
        pass
    return p


def _write(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _umount():
    try:
        vfs.umount(MNT)
    except (OSError, PowerCut):
        pass


DIR = "<dir>"


def _steps(rounds):
    """The workload as steps (kind, name, data): config replacements, log appends, files
    created and removed, directories made; big enough that littlefs compacts and relocates
    metadata blocks on the small geometry."""
    out = []
    for k in range(rounds):
        out.append(("replace", "cfg", (b"config-v%d;" % k) * (12 + 3 * (k % 4))))
        out.append(("append", "log", (b"event-%d;" % k) * 3))
        out.append(("create", "f%d" % k, (b"file-%d;" % k) * (5 + 9 * (k % 3))))
        if k:
            out.append(("remove", "f%d" % (k - 1), None))
        if k % 3 == 0:
            out.append(("mkdir", "d%d" % k, DIR))
            out.append(("replace", "d%d/state" % k, b"in a directory %d" % k))
    return out


SETUP = {"cfg": b"config-initial", "log": b"", "keep": b"never touched by the workload"}


def _apply(state, step):
    kind, name, data = step
    after = dict(state)
    if kind == "append":
        after[name] = state[name] + data
    else:
        after[name] = data  # None for a removal
    return after


def _do(step):
    kind, name, data = step
    path = MNT + "/" + name
    if kind == "replace":
        _write(path + ".tmp", data)
        os.rename(path + ".tmp", path)
    elif kind == "append":
        _write(path, data, "ab")
    elif kind == "create":
        _write(path, data)
    elif kind == "remove":
        os.remove(path)
    else:
        os.mkdir(path)


def _setup(dev):
    vfs.VfsLfs2.mkfs(dev)
    mount(dev, MNT)
    for name in SETUP:
        _write(MNT + "/" + name, SETUP[name])
    vfs.umount(MNT)


def _content(path):
    try:
        if os.stat(path)[0] & 0x4000:
            return DIR
    except OSError:
        return None
    return _read(path)


def _listing(folder, prefix, out):
    for name in os.listdir(folder):
        out.append(prefix + name)
        if os.stat(folder + "/" + name)[0] & 0x4000:
            _listing(folder + "/" + name, prefix + name + "/", out)
    return out


def _check(before, step):
    """Every file as before the interrupted step or as after it; never garbage."""
    after = _apply(before, step)
    kind, name, data = step
    for path in _listing(MNT, "", []):
        known = path in before or path in after
        assert known or path == name + ".tmp", "unexpected file " + path
    for path in after:
        got = _content(MNT + "/" + path)
        allowed = [before.get(path), after[path]]
        if kind == "create" and path == name:
            allowed.append(b"")  # created, data not yet committed: empty, never partial
        assert got in allowed, (path, got, allowed)
    if kind == "replace":
        tmp = _content(MNT + "/" + name + ".tmp")
        assert tmp in (None, b"", data), tmp
    return _content(MNT + "/" + name) == after[name]


def _still_writable():
    """After the reboot the filesystem takes a replacement and reads it back."""
    _write(MNT + "/cfg.tmp", b"after reboot")
    os.rename(MNT + "/cfg.tmp", MNT + "/cfg")
    assert _read(MNT + "/cfg") == b"after reboot"


def _count_ops(path, bs, blocks, steps):
    dev = FlashSim(path=path, block_size=bs, block_count=blocks)
    _setup(dev)
    start = dev.ops
    erased = dev.blocks_erased
    mount(dev, MNT, mkfs_if_needed=False)
    for step in steps:
        _do(step)
    vfs.umount(MNT)
    n = dev.ops - start
    erased = dev.blocks_erased - erased
    dev.close()
    return n, erased


def _landed_label(landed):
    if landed is None:
        return "half a program or a third of an erase"
    return "nothing" if landed == 0 else "all but a byte"


def _every_cut_point(bs, blocks, rounds, landed=None):
    path = _img()
    steps = _steps(rounds)
    total, erased = _count_ops(path, bs, blocks, steps)
    assert total > len(steps)
    applied_at_cut = 0
    for cut in range(total):  # cut index 0 .. total-1: the (cut+1)-th program/erase is torn
        dev = FlashSim(path=path, block_size=bs, block_count=blocks)
        _setup(dev)
        mount(dev, MNT, mkfs_if_needed=False)
        dev.cut_after(cut + 1, landed)
        state = dict(SETUP)
        current = None
        try:
            for step in steps:
                current = step
                _do(step)
                state = _apply(state, step)
            raise AssertionError("the workload ran past its cut point %d" % cut)
        except PowerCut:
            # littlefs passes the block device's exception through unchanged.
            pass
        _umount()
        dev.close()
        gc.collect()  # files left open by the cut are finalised here, on the powered-off chip
        rebooted = FlashSim(path=path, block_size=bs, block_count=blocks)
        mount(rebooted, MNT, mkfs_if_needed=False)  # must mount without reformatting
        if _check(state, current):
            applied_at_cut += 1
        _still_writable()
        vfs.umount(MNT)
        rebooted.close()
    print("%d-byte blocks x %d, %d steps (%d erases), torn op lands %s: %d cut points exercised; "
          "interrupted step visible after %d"
          % (bs, blocks, len(steps), erased, _landed_label(landed), total,
             applied_at_cut))
    assert applied_at_cut < total
    return applied_at_cut


def test_every_cut_point_leaves_old_or_new_small_blocks():
    assert _every_cut_point(512, 24, 12) > 0, "both outcomes of an interrupted step were seen"


def test_every_cut_point_leaves_old_or_new_4k_blocks():
    assert _every_cut_point(4096, 16, 6) > 0, "both outcomes of an interrupted step were seen"


def test_every_cut_point_torn_op_lands_nothing():
    # littlefs makes a step durable with the last program of the step (its commit's CRC):
    # when nothing of the torn op lands, no interrupted step may appear done.
    assert _every_cut_point(512, 24, 12, 0) == 0


def test_every_cut_point_torn_op_lands_all_but_a_byte():
    assert _every_cut_point(512, 24, 12, 1 << 20) > 0


def _cost(dev, label, fn, reps):
    p0, e0 = dev.bytes_programmed, dev.blocks_erased
    for i in range(reps):
        fn(i)
    per_p = (dev.bytes_programmed - p0) // reps
    per_e = (dev.blocks_erased - e0) / reps
    print("%-40s programmed %5d bytes, erased %.1f blocks" % (label, per_p, per_e))
    return per_p, per_e


def test_flash_cost_per_file_operation():
    dev = FlashSim(path=_img(), block_size=4096, block_count=64)
    vfs.VfsLfs2.mkfs(dev)
    mount(dev, MNT)
    _write(MNT + "/cfg", b"x" * 200)
    _write(MNT + "/log", b"")
    reps = 10

    def create(i):
        _write(MNT + "/f%d" % i, b"c" * 100)

    def rewrite(i):
        _write(MNT + "/cfg.tmp", b"y" * 200)
        os.rename(MNT + "/cfg.tmp", MNT + "/cfg")

    def in_place(i):
        _write(MNT + "/cfg", b"z" * 200)

    def append(i):
        _write(MNT + "/log", b"r" * 24, "ab")

    def mkdir(i):
        os.mkdir(MNT + "/d%d" % i)

    def remove(i):
        os.remove(MNT + "/f%d" % i)

    c = _cost(dev, "create a 100-byte file", create, reps)
    r = _cost(dev, "replace a 200-byte file (temp + rename)", rewrite, reps)
    w = _cost(dev, "overwrite a 200-byte file in place", in_place, reps)
    a = _cost(dev, "append 24 bytes to a log (open/close)", append, reps)
    m = _cost(dev, "mkdir", mkdir, reps)
    d = _cost(dev, "remove a file", remove, reps)
    assert c[0] >= 100 and r[0] >= 200 and w[0] >= 200 and a[0] >= 24
    assert m[0] > 0 and d[0] > 0
    assert r[0] > w[0], "the rename costs a metadata commit of its own"
    vfs.umount(MNT)
    dev.close()
