# The NOR-flash simulator's rules, under CPython and MicroPython alike.
import os

from board.flashsim import FlashSim, PowerCut


def _path(name):
    base = os.getenv("MPY_TEST_TMP") or "/tmp"
    p = base + "/" + name
    try:
        os.remove(p)
    except OSError:
        pass
    return p


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


def test_new_flash_is_erased():
    f = FlashSim(block_size=256, block_count=4)
    buf = bytearray(256)
    f.readblocks(3, buf)
    assert buf == b"\xff" * 256
    assert f.ioctl(4, 0) == 4 and f.ioctl(5, 0) == 256


def test_program_only_clears_bits():
    f = FlashSim(block_size=256, block_count=4)
    f.writeblocks(1, b"\x0f\xf0", 10)
    f.writeblocks(1, b"\x0e\x00", 10)  # clearing more bits is allowed
    buf = bytearray(2)
    f.readblocks(1, buf, 10)
    assert buf == b"\x0e\x00"
    assert _raises(ValueError, f.writeblocks, 1, b"\xff", 10)
    f.readblocks(1, buf, 10)
    assert buf == b"\x0e\x00", "a refused program must change nothing"


def test_erase_restores_ff_and_counts():
    f = FlashSim(block_size=256, block_count=4)
    f.writeblocks(2, b"\x00" * 16, 0)
    f.ioctl(6, 2)
    buf = bytearray(16)
    f.readblocks(2, buf)
    assert buf == b"\xff" * 16
    assert f.blocks_erased == 1 and f.bytes_programmed == 16 and f.ops == 2


def test_simple_protocol_erases_then_programs_whole_blocks():
    f = FlashSim(block_size=256, block_count=4)
    f.writeblocks(1, b"\x00" * 256, 0)
    f.writeblocks(1, b"\xaa" * 512)  # no offset: erase + program blocks 1 and 2
    buf = bytearray(512)
    f.readblocks(1, buf)
    assert buf == b"\xaa" * 512
    assert f.blocks_erased == 2


def test_out_of_range_is_refused():
    f = FlashSim(block_size=256, block_count=4)
    assert _raises(ValueError, f.readblocks, 4, bytearray(1))
    assert _raises(ValueError, f.readblocks, -1, bytearray(1))
    assert _raises(ValueError, f.writeblocks, 3, b"\x00" * 2, 255)
    assert _raises(ValueError, f.ioctl, 6, 9)


def test_image_persists_across_reopen():
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


def test_power_cut_tears_the_program_and_kills_the_chip():
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


def test_power_cut_during_erase_leaves_a_partly_erased_block():
    f = FlashSim(block_size=256, block_count=4)
    f.writeblocks(1, b"\x00" * 256, 0)
    f.cut_after(1)
    assert _raises(PowerCut, f.ioctl, 6, 1)
    f._dead = False  # look at the chip from outside
    buf = bytearray(256)
    f.readblocks(1, buf)
    assert 0 < _count(buf, 0xFF) < 256


def test_cut_after_rejects_zero():
    assert _raises(ValueError, FlashSim(block_size=256, block_count=2).cut_after, 0)
