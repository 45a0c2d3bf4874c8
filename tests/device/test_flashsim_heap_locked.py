# littlefs calls block methods with the heap locked (e.g. when the garbage collector closes a
# file): the simulator must then neither allocate on its data path nor fail to raise its own
# errors (a fresh exception instance would itself be a MemoryError).
# Each check_* runs on the Python class and, on the unix32 image, on the C type (`vboard`).
import sys

import micropython

from board.vdev import flashsim_py
from tests.scratch import scratch_path as _path

IMPLEMENTATIONS = [("python", flashsim_py.FlashSim, flashsim_py.PowerCut)]
try:
    import vboard

    IMPLEMENTATIONS.append(("c", vboard.FlashSim, vboard.PowerCut))
except ImportError:
    pass


def _locked(power_cut, fn, a, b, c=None):
    """Call fn(a, b[, c]) with the heap locked; the name of what it raised, or None.

    No *args: unpacking them would itself allocate under the lock.
    """
    micropython.heap_lock()
    try:
        if c is None:
            fn(a, b)
        else:
            fn(a, b, c)
        got = None
    except power_cut:
        got = "PowerCut"
    except ValueError:
        got = "ValueError"
    except MemoryError:
        got = "MemoryError"
    micropython.heap_unlock()
    return got


def _data_path_does_not_allocate(dev, exc):
    buf = bytearray(300)
    data = bytearray(300)
    for i in range(300):
        data[i] = i & 0xFE
    assert _locked(exc, dev.writeblocks, 1, data, 200) is None
    assert _locked(exc, dev.readblocks, 1, buf, 200) is None
    assert buf == data
    assert _locked(exc, dev.ioctl, 6, 1) is None
    assert _locked(exc, dev.readblocks, 1, buf, 200) is None
    assert buf == b"\xff" * 300
    assert _locked(exc, dev.writeblocks, 1, b"\x01", 0) is None
    assert _locked(exc, dev.writeblocks, 1, b"\x02", 0) == "ValueError"
    assert _locked(exc, dev.readblocks, 99, buf) == "ValueError"


def check_file_backed_data_path_does_not_allocate(FlashSim, exc):
    _data_path_does_not_allocate(FlashSim(path=_path("locked.img"), block_size=1024, block_count=4), exc)


def check_ram_data_path_does_not_allocate(FlashSim, exc):
    _data_path_does_not_allocate(FlashSim(block_size=1024, block_count=4), exc)


def check_power_cut_is_raised_with_the_heap_locked(FlashSim, exc):
    dev = FlashSim(path=_path("locked-cut.img"), block_size=1024, block_count=4)
    dev.cut_after(2)
    assert _locked(exc, dev.writeblocks, 0, b"\x00" * 64, 0) is None
    assert _locked(exc, dev.writeblocks, 0, b"\x00" * 64, 64) == "PowerCut"
    assert _locked(exc, dev.readblocks, 0, bytearray(8)) == "PowerCut"
    assert _locked(exc, dev.ioctl, 6, 0) == "PowerCut"
    dev.close()
    assert _locked(exc, dev.writeblocks, 0, b"\x00", 200) == "PowerCut"


def _bound(check, cls, exc):
    def test():
        check(cls, exc)

    return test


# setattr, not globals()[...]: MicroPython finds a module's names as interned strings only.
_here = sys.modules[__name__]
for _check in [k for k in dir(_here) if k.startswith("check_")]:
    for _impl, _cls, _exc in IMPLEMENTATIONS:
        setattr(_here, "test_%s__%s" % (_check[6:], _impl), _bound(getattr(_here, _check), _cls, _exc))
