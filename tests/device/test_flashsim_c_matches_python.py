# On the unix32 image: the C flash simulator (`vboard.FlashSim`) and the Python class
# (board/vdev/flashsim_py.py) driven through the same random operation sequences (seeded, so a
# failure repeats), torn operations and reboots included, must end every step alike: the same
# outcome (done, ValueError, PowerCut), the same counters and the same flash contents. The
# journal's and the cache's power-cut tests rely on the C type tearing exactly as the Python
# class does. Without the C type (any other interpreter) the file holds no test.
from board.vdev import flashsim_py
from tests.scratch import scratch_path

try:
    import vboard
except ImportError:
    vboard = None

STEPS = 400


class _Rng:
    """A 32-bit LCG: the same sequence on every interpreter and run."""

    def __init__(self, seed):
        self.s = seed

    def below(self, n):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.s >> 8) % n


def _outcome(dev, exc, method, *args):
    try:
        getattr(dev, method)(*args)
    except exc:
        return "PowerCut"
    except ValueError:
        return "ValueError"
    return "done"


def _contents(dev):
    dead = dev._dead
    dev._dead = False
    buf = bytearray(dev.size)
    dev.readblocks(0, buf)
    dev._dead = dead
    return buf


def _counters(dev):
    return (dev.bytes_programmed, dev.bytes_read, dev.blocks_erased, dev.ops, dev._dead)


def _run(seed, backed):
    rng = _Rng(seed)
    bs = 256 * (1 + rng.below(2))
    count = 3 + rng.below(4)
    size = bs * count
    paths = (scratch_path("py-%d.img" % seed), scratch_path("c-%d.img" % seed)) if backed else (None, None)
    impls = ((flashsim_py.FlashSim, flashsim_py.PowerCut), (vboard.FlashSim, vboard.PowerCut))

    def make():
        # By index: MicroPython's zip() takes no strict=.
        return [impls[k][0](path=paths[k], block_size=bs, block_count=count) for k in (0, 1)]

    devs = make()
    for step in range(STEPS):
        kind = rng.below(10)
        block = rng.below(count + 1) - (1 if rng.below(20) == 0 else 0)  # now and then out of range
        if kind < 4:  # program with an offset, mostly legal (ANDed with what is there)
            offset = rng.below(bs + 64)
            n = rng.below(300)
            base = devs[0]
            here = bytearray(n)
            start = block * bs + offset
            if 0 <= block < count and start + n <= size and not base._dead:
                base.read(start, here)
                base.bytes_read -= n  # a look from outside, not counted
            data = bytearray(n)
            for i in range(n):
                data[i] = here[i] & rng.below(256) if rng.below(30) else rng.below(256)
            args = ("writeblocks", block, data, offset)
        elif kind < 5:  # simple protocol: whole blocks erased then programmed
            data = bytearray(bs * (1 + rng.below(2)))
            for i in range(0, len(data), 7):
                data[i] = rng.below(256)
            args = ("writeblocks", block, data)
        elif kind < 7:
            args = ("ioctl", 6, block)
        elif kind < 8:
            buf = bytearray(rng.below(200))
            args = ("readblocks", block, buf, rng.below(bs))
        elif kind < 9:
            n = 1 + rng.below(4)
            landed = None if rng.below(2) else rng.below(bs + 8)
            for dev in devs:
                dev.cut_after(n, landed)
            continue
        else:  # a reboot: a RAM chip revived, an image reopened
            if backed:
                for dev in devs:
                    dev.close()
                devs = make()
            else:
                for dev in devs:
                    dev._dead = False
            continue
        got = []
        for k in (0, 1):
            dev, exc = devs[k], impls[k][1]
            name, rest = args[0], args[1:]
            got.append(_outcome(dev, exc, name, *rest))
            if name == "readblocks" and got[-1] == "done":
                got.append(bytes(rest[1]))
        where = "seed %d step %d %s%r" % (seed, step, args[0], args[1:2])
        assert got[: len(got) // 2] == got[len(got) // 2 :], where + ": %r" % (got,)
        assert _counters(devs[0]) == _counters(devs[1]), where + ": %r" % ([_counters(d) for d in devs],)
        if step % 8 == 0 or got[0] == "PowerCut":
            assert _contents(devs[0]) == _contents(devs[1]), where + ": contents differ"
    for dev in devs:
        dev.close()


if vboard is not None:

    def test_ram_chips_match_op_for_op():
        for seed in (1, 2, 3):
            _run(seed, backed=False)

    def test_image_file_chips_match_op_for_op():
        for seed in (11, 12, 13):
            _run(seed, backed=True)
