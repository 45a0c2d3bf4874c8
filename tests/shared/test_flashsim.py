# The NOR-flash simulator's rules, under CPython and MicroPython alike, for each
# implementation there: the Python class everywhere and, on the unix32 image, the C type the
# board uses there (`vboard`). Each check_* below becomes test_*__python and test_*__c.

import sys

from board.vdev import flashsim_py
from tests.scratch import scratch_path as _path

IMPLEMENTATIONS = [("python", flashsim_py.FlashSim, flashsim_py.PowerCut)]
try:
    import vboard

    IMPLEMENTATIONS.append(("c", vboard.FlashSim, vboard.PowerCut))
except ImportError:
    pass


def _count(buf, value):
    n = 0
    for b in buf:
        if b == value:
            n += 1
    return n


def _raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return True
    return False


def check_new_flash_is_erased(FlashSim, PowerCut):
    f = FlashSim(block_size=256, block_count=4)
    buf = bytearray(256)
    f.readblocks(3, buf)
    assert buf == b"\xff" * 256
    assert f.ioctl(4, 0) == 4 and f.ioctl(5, 0) == 256


def check_program_only_clears_bits(FlashSim, PowerCut):
    f = FlashSim(block_size=256, block_count=4)
    f.writeblocks(1, b"\x0f\xf0", 10)
    f.writeblocks(1, b"\x0e\x00", 10)  # clearing more bits is allowed
    buf = bytearray(2)
    f.readblocks(1, buf, 10)
    assert buf == b"\x0e\x00"
    assert _raises(ValueError, f.writeblocks, 1, b"\xff", 10)
    f.readblocks(1, buf, 10)
    assert buf == b"\x0e\x00", "a refused program must change nothing"


def check_erase_restores_ff_and_counts(FlashSim, PowerCut):
    f = FlashSim(block_size=256, block_count=4)
    f.writeblocks(2, b"\x00" * 16, 0)
    f.ioctl(6, 2)
    buf = bytearray(16)
    f.readblocks(2, buf)
    assert buf == b"\xff" * 16
    assert f.blocks_erased == 1 and f.bytes_programmed == 16 and f.ops == 2


def check_simple_protocol_erases_then_programs_whole_blocks(FlashSim, PowerCut):
    f = FlashSim(block_size=256, block_count=4)
    f.writeblocks(1, b"\x00" * 256, 0)
    f.writeblocks(1, b"\xaa" * 512)  # no offset: erase + program blocks 1 and 2
    buf = bytearray(512)
    f.readblocks(1, buf)
    assert buf == b"\xaa" * 512
    assert f.blocks_erased == 2


def check_out_of_range_is_refused(FlashSim, PowerCut):
    f = FlashSim(block_size=256, block_count=4)
    assert _raises(ValueError, f.readblocks, 4, bytearray(1))
    assert _raises(ValueError, f.readblocks, -1, bytearray(1))
    assert _raises(ValueError, f.writeblocks, 3, b"\x00" * 2, 255)
    assert _raises(ValueError, f.ioctl, 6, 9)


def check_image_persists_across_reopen(FlashSim, PowerCut):
    p = _path("fs-persist.img")
    f = FlashSim(path=p, block_size=256, block_count=8)
    f.writeblocks(5, b"hello", 100)
    f.close()
    g = FlashSim(path=p, block_size=256, block_count=8)
    buf = bytearray(5)
    g.readblocks(5, buf, 100)
    assert buf == b"hello"
    g.readblocks(4, buf, 100)
    assert buf == b"\xff" * 5
    g.close()


def check_power_cut_tears_the_program_and_kills_the_chip(FlashSim, PowerCut):
    p = _path("fs-cut.img")
    f = FlashSim(path=p, block_size=256, block_count=4)
    f.cut_after(2)
    f.writeblocks(0, b"\x00" * 8, 0)  # op 1 completes
    assert _raises(PowerCut, f.writeblocks, 0, b"\x00" * 64, 8)  # op 2 is torn
    assert _raises(PowerCut, f.readblocks, 0, bytearray(1))
    assert _raises(PowerCut, f.ioctl, 6, 1)
    f.close()
    g = FlashSim(path=p, block_size=256, block_count=4)  # reboot
    buf = bytearray(72)
    g.readblocks(0, buf)
    assert buf[:8] == b"\x00" * 8
    assert 0 < _count(buf[8:], 0) < 64, "the torn program landed partly"
    assert _count(buf[8:], 0) + _count(buf[8:], 0xFF) >= 63
    g.close()


def check_power_cut_during_erase_leaves_a_partly_erased_block(FlashSim, PowerCut):
    f = FlashSim(block_size=256, block_count=4)
    f.writeblocks(1, b"\x00" * 256, 0)
    f.cut_after(1)
    assert _raises(PowerCut, f.ioctl, 6, 1)
    f._dead = False  # look at the chip from outside
    buf = bytearray(256)
    f.readblocks(1, buf)
    assert 0 < _count(buf, 0xFF) < 256


def check_cut_after_rejects_zero(FlashSim, PowerCut):
    assert _raises(ValueError, FlashSim(block_size=256, block_count=2).cut_after, 0)


def check_programs_crossing_window_boundaries(FlashSim, PowerCut):
    f = FlashSim(block_size=1024, block_count=2)
    data = bytearray(600)
    for i in range(600):
        data[i] = i & 0x7F
    f.writeblocks(0, data, 200)  # spans the 256-byte windows at 256, 512 and 768
    back = bytearray(600)
    f.readblocks(0, back, 200)
    assert back == data
    edge = bytearray(2)
    f.readblocks(0, edge, 199)
    assert edge[0] == 0xFF and edge[1] == 0
    # A conflict in a later window refuses the whole program: nothing lands in the earlier one.
    g = FlashSim(block_size=1024, block_count=2)
    g.writeblocks(0, b"\x00", 600)
    probe = b"\x00" * 300 + b"\x01" + b"\x00" * 99  # bytes 300..399 of it cover 500..599
    assert _raises(ValueError, g.writeblocks, 0, probe, 300)
    back = bytearray(300)
    g.readblocks(0, back, 300)
    assert back == b"\xff" * 300
    assert g.bytes_programmed == 1 and g.ops == 1


def check_programs_may_span_blocks_with_an_offset(FlashSim, PowerCut):
    f = FlashSim(block_size=256, block_count=4)
    f.writeblocks(1, b"\x55" * 300, 100)  # ends 144 bytes into block 2
    buf = bytearray(144)
    f.readblocks(2, buf)
    assert buf == b"\x55" * 144


def check_counters_count_reads_programs_erases_and_ops(FlashSim, PowerCut):
    f = FlashSim(block_size=256, block_count=4)
    buf = bytearray(100)
    f.readblocks(0, buf)
    f.readblocks(3, buf, 10)
    assert f.bytes_read == 200 and f.ops == 0, "reads are not operations"
    f.writeblocks(0, b"\x00" * 30, 5)
    f.writeblocks(2, b"\x00" * 256)  # simple protocol: one erase + one program
    f.ioctl(6, 1)
    assert f.bytes_programmed == 30 + 256
    assert f.blocks_erased == 2
    assert f.ops == 4
    assert _raises(ValueError, f.writeblocks, 0, b"\xff", 5)
    assert f.ops == 4 and f.bytes_programmed == 286, "a refused program is not counted"


def check_image_file_is_the_raw_flash_contents(FlashSim, PowerCut):
    p = _path("fs-raw.img")
    f = FlashSim(path=p, block_size=256, block_count=8)
    f.writeblocks(3, b"\x12\x34", 7)
    with open(p, "rb") as raw:
        img = raw.read()
    assert len(img) == 256 * 8
    assert img[3 * 256 + 7 : 3 * 256 + 9] == b"\x12\x34"
    assert _count(img, 0xFF) == 256 * 8 - 2
    f.ioctl(6, 3)
    with open(p, "rb") as raw:
        img = raw.read()
    assert _count(img, 0xFF) == 256 * 8, "an erase reaches the file at once"
    f.close()


def check_cut_counts_from_arming_and_can_be_armed_at_construction(FlashSim, PowerCut):
    f = FlashSim(block_size=256, block_count=4)
    f.writeblocks(0, b"\x00", 0)
    f.writeblocks(0, b"\x00", 1)
    f.cut_after(1)
    assert _raises(PowerCut, f.writeblocks, 0, b"\x00" * 4, 2)
    g = FlashSim(block_size=256, block_count=4, cut_after=3)
    g.ioctl(6, 0)
    g.writeblocks(0, b"\x00", 0)
    assert _raises(PowerCut, g.ioctl, 6, 1)
    assert g.ops == 3
    assert _raises(PowerCut, g.writeblocks, 0, b"\x00", 1)
    assert g.ops == 3, "a dead chip does no more operations"


def check_a_dead_chip_refuses_every_kind_of_operation(FlashSim, PowerCut):
    f = FlashSim(block_size=256, block_count=4, cut_after=1)
    assert _raises(PowerCut, f.writeblocks, 1, b"\x00" * 256)  # torn erase of the simple protocol
    assert _raises(PowerCut, f.writeblocks, 1, b"\x00", 0)
    assert _raises(PowerCut, f.writeblocks, 1, b"\x00" * 256)
    assert _raises(PowerCut, f.readblocks, 1, bytearray(4))
    assert _raises(PowerCut, f.ioctl, 6, 2)


def check_close_is_a_power_off_and_reopening_is_a_reboot(FlashSim, PowerCut):
    p = _path("fs-close.img")
    f = FlashSim(path=p, block_size=256, block_count=4)
    f.writeblocks(2, b"\xa5", 0)
    f.close()
    assert _raises(PowerCut, f.readblocks, 2, bytearray(1))
    assert _raises(PowerCut, f.writeblocks, 2, b"\x00", 1)
    g = FlashSim(path=p, block_size=256, block_count=4)
    buf = bytearray(2)
    g.readblocks(2, buf)
    assert buf == b"\xa5\xff"
    assert g.ops == 0 and g.bytes_programmed == 0, "counters start again at a reboot"
    g.close()


def check_landed_sets_how_much_of_the_torn_op_reaches_the_flash(FlashSim, PowerCut):
    f = FlashSim(block_size=256, block_count=4)
    f.cut_after(1, landed=0)
    assert _raises(PowerCut, f.writeblocks, 0, b"\x00" * 8, 0)
    f._dead = False  # look at the chip from outside
    buf = bytearray(8)
    f.readblocks(0, buf)
    assert buf == b"\x0f" + b"\xff" * 7, "nothing landed but the half-programmed first byte"
    g = FlashSim(block_size=256, block_count=4)
    g.cut_after(1, landed=1000)
    assert _raises(PowerCut, g.writeblocks, 0, b"\x00" * 8, 0)
    g._dead = False
    g.readblocks(0, buf)
    assert buf == b"\x00" * 7 + b"\x0f", "all but the last byte, which is half-programmed"
    h = FlashSim(block_size=256, block_count=4)
    h.writeblocks(1, b"\x00" * 256, 0)
    h.cut_after(1, landed=100)
    assert _raises(PowerCut, h.ioctl, 6, 1)
    h._dead = False
    blk = bytearray(256)
    h.readblocks(1, blk)
    assert blk == b"\xff" * 100 + b"\x00" * 156
    assert _raises(ValueError, h.cut_after, 1, -1)


def _bound(check, cls, exc):
    def test():
        check(cls, exc)

    return test


# setattr, not globals()[...]: MicroPython finds a module's names as interned strings only.
_here = sys.modules[__name__]
for _check in [k for k in dir(_here) if k.startswith("check_")]:
    for _impl, _cls, _exc in IMPLEMENTATIONS:
        setattr(_here, "test_%s__%s" % (_check[6:], _impl), _bound(getattr(_here, _check), _cls, _exc))
