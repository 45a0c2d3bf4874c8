"""The NOR-flash simulator the board uses: `FlashSim`, `PowerCut` and `mount`.

On the unix32 image the simulator is the C type of the `vboard` module
(board/unix32/cmodules/vboard), built into the image as the ESP32's flash partitions are C
drivers: it takes nothing from the MicroPython heap but its object. Elsewhere (CPython, the
64-bit PyPI interpreter, the bare-metal image) it is the Python class of flashsim_py.py. Both
obey the same rules and pass the same tests (docs/flash-simulator.md).
"""

try:
    from vboard import FlashSim, PowerCut
except ImportError:
    from board.vdev.flashsim_py import FlashSim, PowerCut  # noqa: F401


def mount(dev, mount_point, mkfs_if_needed=True):
    """Mount littlefs (v2) on `dev` at `mount_point`; format it first if it does not mount."""
    import vfs

    try:
        fs = vfs.VfsLfs2(dev)
    except OSError:
        if not mkfs_if_needed:
            raise
        vfs.VfsLfs2.mkfs(dev)
        fs = vfs.VfsLfs2(dev)
    vfs.mount(fs, mount_point)
    return fs
