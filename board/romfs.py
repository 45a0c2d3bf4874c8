"""The application's bytecode from a ROMFS image, checked before it is trusted.

MicroPython's ROMFS (`vfs.VfsRom`) is a read-only filesystem whose `.mpy` files are run in
place: on a board with memory-mapped flash the bytecode then stays out of the heap, which
is most of what the firmware would otherwise keep there (docs/architecture.md, heap).

`doorctl deploy --romfs` writes the image into a ROM partition and only then records which
partition holds it, its size and its SHA-256 in `rom.json` on the filesystem (written to a
temporary file and renamed: old record or new, never half of one). At boot the image is
mounted at /rom, ahead of /lib on the import path, only when it matches that record, so a
damaged image is never imported. With two ROM partitions the deploy writes the one not in
use and the record moves over only once the new image is proven: a power cut at any
instant leaves the board running the image it had. With one, the record is removed before
the partition is touched, and a cut deploy leaves the files in /lib (or the REPL).
"""

import hashlib
import sys

HEADER = b"\xd2\xcd\x31"
MOUNT = "/rom"
RECORD = "rom.json"
NO_RECORD = "no rom.json record (not deployed with --romfs, or the deploy was cut short)"
_CHUNK = 1024


def image_length(head):
    """Total length of the ROMFS image starting with `head` (its first 12 bytes or more),
    or 0 when `head` is not a ROMFS header."""
    if bytes(head[:3]) != HEADER:
        return 0
    size = 0
    for i in range(3, min(len(head), 12)):
        v = head[i]
        size = (size << 7) | (v & 0x7F)
        if not v & 0x80:
            return i + 1 + size
    return 0


def digest(image, length):
    """SHA-256 hex of the first `length` bytes of a buffer, hashed in small slices."""
    h = hashlib.sha256()
    mv = memoryview(image)
    for off in range(0, length, _CHUNK):
        h.update(mv[off:min(length, off + _CHUNK)])
    d = h.digest()
    return "".join("%02x" % b for b in d)


def read_record(path):
    """The deploy's record {"partition": n, "size": n, "sha256": hex}, or None when absent
    or unreadable."""
    import json

    try:
        with open(path) as f:
            rec = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("size"), int) \
            or not isinstance(rec.get("sha256"), str) \
            or not isinstance(rec.get("partition", 0), int):
        return None
    return rec


def check(image, record):
    """None when `image` is the one `record` describes, else why not (one line)."""
    if record is None:
        return NO_RECORD
    length = image_length(image)
    if length == 0:
        return "no ROMFS image in the partition"
    if length != record["size"] or length > len(image):
        return "ROMFS image is %d bytes, the record says %d" % (length, record["size"])
    if digest(image, length) != record["sha256"]:
        return "ROMFS image does not match its record (damaged or partly written)"
    return None


def adopt(partition_image, record_path, mount_point=MOUNT):
    """Run the application from the recorded ROM partition when its image matches the
    record, else not at all.

    `partition_image(n)` gives ROM partition n's contents (memory-mapped flash on a board),
    or None when there is no such partition or it holds no image; it is called only when
    there is a record. Mounts the image at `mount_point`, first on
    sys.path, unless the port has mounted that partition already; an image that does not
    match is taken back off. Returns (image, None) when the image is in use, else
    (None, why not) with a one-line reason for the log."""
    import vfs

    record = read_record(record_path)
    if record is None:
        why = NO_RECORD
    else:
        n = record.get("partition", 0)
        image = partition_image(n)
        why = "no ROMFS image in ROM partition %d" % n if image is None else check(image, record)
    if why is not None:
        unmount(mount_point)
        return None, why
    mounted = mount_point in sys.path
    if mounted and record.get("partition", 0) != 0:
        unmount(mount_point)  # the port mounts partition 0 by itself
        mounted = False
    if not mounted:
        vfs.mount(vfs.VfsRom(image), mount_point)
        sys.path.insert(0, mount_point)
    return image, None


def unmount(mount_point=MOUNT):
    """Take an image (perhaps mounted by the port itself) off the filesystem and the path."""
    import vfs

    try:
        vfs.umount(mount_point)
    except OSError:
        pass
    while mount_point in sys.path:
        sys.path.remove(mount_point)
    lib = mount_point + "/lib"
    while lib in sys.path:
        sys.path.remove(lib)
