"""The virtual board's ROM partitions: `vfs.rom_ioctl` as MicroPython's ROMFS ports have it.

Each partition is a NOR-flash simulator (`rom0.img`, `rom1.img` in the state directory), so
the unmodified `mpremote romfs deploy` (and so `doorctl deploy --romfs`) erases and
programs it exactly as it does an ESP32's ROM partition, and a power cut can tear a deploy
at any write.

The unix port has no memory-mapped flash, so at boot the image is copied into one heap
block of exactly its size, allocated once and never freed: the figures the virtual device
reports (`rom_bytes`) let the firmware's own heap be told apart from this stand-in for flash.

The unix port's `vfs` module has no `rom_ioctl`; `install` makes `import vfs` give a module
that has one (over the real `vfs`), so code written for a board runs unchanged here.
"""

import builtins

import vfs as _real_vfs

ENODEV = -19
EINVAL = -22


class _VfsWithRom:
    """The real `vfs` module, plus `rom_ioctl` over the board's partitions."""

    def __init__(self, partitions):
        self._partitions = partitions  # a callable: the list of partitions

    def __getattr__(self, name):
        return getattr(_real_vfs, name)

    def rom_ioctl(self, op, *args):
        parts = self._partitions()
        if op == 1:  # number of ROM partitions
            return len(parts)
        if op == 2:  # a partition: a block device (ioctl 4/5/6, readblocks, writeblocks)
            n = args[0] if args else 0
            return parts[n] if 0 <= n < len(parts) else ENODEV
        return EINVAL


_installed = [None]


def install(partitions):
    """Make `import vfs` carry `rom_ioctl` from now on; `partitions()` gives the board's
    ROM partitions (block devices), called when one is asked for."""
    if _installed[0] is not None:
        _installed[0]._partitions = partitions
        return
    shim = _VfsWithRom(partitions)
    _installed[0] = shim
    original = builtins.__import__

    def _import(name, *args):
        if name == "vfs":
            return shim
        return original(name, *args)

    builtins.__import__ = _import


def map_image(partition):
    """The partition's ROMFS image copied into RAM (exactly its length), or None when the
    partition holds none. This copy plays the memory-mapped flash of a real board."""
    from board.romfs import image_length

    head = bytearray(12)
    partition.readblocks(0, head, 0)
    length = image_length(head)
    if length == 0 or length > partition.size:
        return None
    image = bytearray(length)
    mv = memoryview(image)
    bs = partition.block_size
    for block in range(0, (length + bs - 1) // bs):
        start = block * bs
        partition.readblocks(block, mv[start:min(length, start + bs)], 0)
    return image
