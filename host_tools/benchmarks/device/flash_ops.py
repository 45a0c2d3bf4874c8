# What littlefs file operations cost the flash, and how fast the flash simulator itself is,
# measured in one MicroPython process:  micropython flash_ops.py DIR REPS
# Prints "op NAME BYTES_PROGRAMMED ERASES" per file operation (means over REPS), then
# "sim PROGRAM_US ERASE_US READ_US" and "baseline WRITE_US" (a plain file write of a window).
import os
import sys
import time

import vfs

from board.vdev.flashsim import FlashSim, mount

folder, reps = sys.argv[1], int(sys.argv[2])
MNT = "/bench"


def fresh(name, blocks):
    p = folder + "/" + name
    try:
        os.remove(p)
    except OSError:
        pass
    return FlashSim(path=p, block_size=4096, block_count=blocks), p


def write(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data)


def create(i):
    write(MNT + "/f%d" % i, b"c" * 100)


def replace(i):
    write(MNT + "/cfg.tmp", b"y" * 200)
    os.rename(MNT + "/cfg.tmp", MNT + "/cfg")


def overwrite(i):
    write(MNT + "/cfg", b"z" * 200)


def append(i):
    write(MNT + "/log", b"r" * 24, "ab")


def mkdir(i):
    os.mkdir(MNT + "/d%d" % i)


def remove(i):
    os.remove(MNT + "/f%d" % i)


dev, _ = fresh("lfs.img", 64)
vfs.VfsLfs2.mkfs(dev)
mount(dev, MNT)
write(MNT + "/cfg", b"x" * 200)
write(MNT + "/log", b"")
for name, fn in (("create", create), ("replace", replace), ("overwrite", overwrite),
                 ("append", append), ("mkdir", mkdir), ("remove", remove)):
    p0, e0 = dev.bytes_programmed, dev.blocks_erased
    for i in range(reps):
        fn(i)
    print("op", name, (dev.bytes_programmed - p0) / reps, (dev.blocks_erased - e0) / reps)
vfs.umount(MNT)

# The simulator's own speed on a file-backed image: 256-byte programs, erases, reads.
sim, path = fresh("speed.img", 16)
data = b"\x00" * 256
buf = bytearray(256)
n = 16 * 16
t0 = time.ticks_us()
for i in range(n):
    sim.writeblocks(i // 16, data, (i % 16) * 256)
t_prog = time.ticks_diff(time.ticks_us(), t0) / n
t0 = time.ticks_us()
for b in range(16):
    sim.ioctl(6, b)
t_erase = time.ticks_diff(time.ticks_us(), t0) / 16
t0 = time.ticks_us()
for i in range(n):
    sim.readblocks(i // 16, buf, (i % 16) * 256)
t_read = time.ticks_diff(time.ticks_us(), t0) / n
sim.close()
print("sim", t_prog, t_erase, t_read)

# Baseline: the same 256-byte writes straight to a file, no NOR rules.
with open(path, "r+b") as f:
    t0 = time.ticks_us()
    for i in range(n):
        f.seek(i * 256)
        f.write(data)
    t_plain = time.ticks_diff(time.ticks_us(), t0) / n
print("baseline", t_plain)
