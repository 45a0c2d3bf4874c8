# Journal append cost on the flash simulator, beside the naive littlefs append-and-flush,
# measured in one MicroPython process:  micropython journal_append.py DIR N
import os
import sys
import time

import vfs

from board.vdev.flashsim import FlashSim, mount
from firmware.journal import Journal
from journal_format import RECORD_SIZE

folder, n = sys.argv[1], int(sys.argv[2])
payload = b"\x11" * 12


def fresh(name, blocks):
    p = folder + "/" + name
    try:
        os.remove(p)
    except OSError:
        pass
    return FlashSim(path=p, block_size=4096, block_count=blocks)


# The journal (raw partition), with idle-time sector erases as in the firmware.
dev = fresh("journal.img", 64)
j = Journal(dev)
j.append(1, 0, 0, 0, 0, 0, payload)
p0, e0 = dev.bytes_programmed, dev.blocks_erased
worst = 0
t0 = time.ticks_us()
for i in range(n):
    a = time.ticks_us()
    j.append(1, 0, 1, i, 0, 0, payload)
    d = time.ticks_diff(time.ticks_us(), a)
    if d > worst:
        worst = d
    if i % 100 == 99:
        j.ack(j.next_seq - 1)
        j.maintain()
elapsed = time.ticks_diff(time.ticks_us(), t0)
print("journal", elapsed / n / 1000, (dev.bytes_programmed - p0) / n,
      (dev.blocks_erased - e0) / n, worst / 1000)

# Baseline: append each 32-byte record to a littlefs file and flush it.
dev = fresh("lfs.img", 128)
vfs.VfsLfs2.mkfs(dev)
mount(dev, "/bench")
rec = b"\x22" * RECORD_SIZE
p0, e0 = dev.bytes_programmed, dev.blocks_erased
t0 = time.ticks_us()
with open("/bench/log", "ab") as f:
    for _ in range(n):
        f.write(rec)
        f.flush()
elapsed = time.ticks_diff(time.ticks_us(), t0)
print("baseline", elapsed / n / 1000, (dev.bytes_programmed - p0) / n,
      (dev.blocks_erased - e0) / n)
vfs.umount("/bench")
