# The ROMFS image is trusted only when it matches the record written after it was proven
# (board/romfs.py): a missing record, a short, damaged or foreign image is never imported.
import hashlib
import json
import sys

from board import romfs
from board.vdev.flashsim import FlashSim, PowerCut
from tests.scratch import scratch_path as _path

MODULE = b"ANSWER = 42\n"


def _uint(v):
    out = [v & 0x7F]
    v >>= 7
    while v:
        out.insert(0, 0x80 | (v & 0x7F))
        v >>= 7
    return bytes(out)


def _record(kind, payload):
    return _uint(kind) + _uint(len(payload)) + payload


def _image(name=b"romt_mod.py", data=MODULE):
    """A ROMFS image with one file (the layout mpremote's VfsRomWriter makes)."""
    body = _record(5, _uint(len(name)) + name + _record(2, data))
    return bytearray(romfs.HEADER + _uint(len(body)) + body)


def _write_record(image, partition=0):
    p = _path("rom.json")
    h = hashlib.sha256(bytes(image)).digest()
    with open(p, "w") as f:
        f.write(json.dumps({"partition": partition, "size": len(image),
                            "sha256": "".join("%02x" % b for b in h)}))
    return p


def _parts(*images):
    """partition_image(n) over these partitions' contents."""
    return lambda n: images[n] if 0 <= n < len(images) else None


def _forget_module():
    if "romt_mod" in sys.modules:
        del sys.modules["romt_mod"]


def test_image_length_reads_the_header():
    img = _image()
    assert romfs.image_length(img) == len(img)
    assert romfs.image_length(b"\x00" * 12) == 0
    assert romfs.image_length(b"\xd2\xcd\x31\xff\xff\xff\xff\xff\xff\xff\xff\xff") == 0


def test_a_recorded_image_is_mounted_and_imported():
    img = _image()
    rec = _write_record(img)
    try:
        image, why = romfs.adopt(_parts(img), rec)
        assert why is None and image is img
        assert sys.path[0] == romfs.MOUNT
        _forget_module()
        import romt_mod

        assert romt_mod.ANSWER == 42
        assert romt_mod.__file__.startswith(romfs.MOUNT + "/")
    finally:
        romfs.unmount()
        _forget_module()
    assert romfs.MOUNT not in sys.path


def test_the_recorded_partition_is_the_one_used():
    old, new = _image(data=b"ANSWER = 1\n"), _image(data=b"ANSWER = 2\n")
    rec = _write_record(new, partition=1)
    try:
        image, why = romfs.adopt(_parts(old, new), rec)
        assert why is None and image is new
        _forget_module()
        import romt_mod

        assert romt_mod.ANSWER == 2
    finally:
        romfs.unmount()
        _forget_module()
    # A record naming a partition the board does not have is refused.
    rec = _write_record(new, partition=2)
    assert romfs.adopt(_parts(old, new), rec) == (None, "no ROMFS image in ROM partition 2")


def test_no_record_no_mount():
    _, why = romfs.adopt(_parts(_image()), _path("absent.json"))
    assert why is not None and "no rom.json record" in why
    assert romfs.MOUNT not in sys.path


def test_a_damaged_image_is_refused():
    img = _image()
    rec = _write_record(img)
    img[len(img) - 3] ^= 0x01  # one bit in the module's text
    _, why = romfs.adopt(_parts(img), rec)
    assert why is not None and "does not match" in why
    assert romfs.MOUNT not in sys.path


def test_another_image_of_another_size_is_refused():
    rec = _write_record(_image())
    _, why = romfs.adopt(_parts(_image(data=b"ANSWER = 43  # longer\n")), rec)
    assert why is not None and "the record says" in why


def test_an_empty_partition_is_reported():
    rec = _write_record(_image())
    _, why = romfs.adopt(_parts(bytearray(b"\xff" * 64)), rec)
    assert why is not None and "no ROMFS image" in why
    _, why = romfs.adopt(_parts(None), rec)
    assert why == "no ROMFS image in ROM partition 0"


def test_an_image_the_port_mounted_is_taken_off_when_it_does_not_match():
    import vfs

    img = _image()
    vfs.mount(vfs.VfsRom(img), romfs.MOUNT)
    sys.path.insert(0, romfs.MOUNT)
    _, why = romfs.adopt(_parts(img), _path("absent.json"))
    assert why is not None
    assert romfs.MOUNT not in sys.path
    _forget_module()
    try:
        import romt_mod  # noqa: F401

        imported = True
    except ImportError:
        imported = False
    assert not imported


def test_a_write_torn_by_a_power_cut_is_refused_at_every_cut_point():
    # The image as the partition holds it when a deploy's write is cut after n programs,
    # with the record of the whole image beside it (the worst case: a stale record).
    from board.vdev.rom import map_image

    img = _image(data=MODULE * 40)
    rec = _write_record(img)
    n = 1
    while True:
        dev = FlashSim(block_size=256, block_count=4)
        dev.cut_after(n)
        done = True
        try:
            dev.erase(0)
            dev.erase(1)
            dev.erase(2)
            for off in range(0, len(img), 128):
                chunk = img[off:off + 128]
                dev.writeblocks(off // 256, chunk, off % 256)
        except PowerCut:
            done = False
        dev._dead = False  # power back ("reboot")
        got = map_image(dev)
        why = romfs.check(got, romfs.read_record(rec)) if got is not None else "none"
        if done:
            assert why is None
            break
        assert why is not None, "cut after %d operations accepted" % n
        n += 1
    assert n > 3
