# A door controller reduced to its journal and uplink, run under the MicroPython unix port by
# the uplink benchmark and the end-to-end uplink tests:
#   micropython uplink_device.py IMAGE BLOCKS HOST PORT DEVICE BOOT APPEND [PACE_MS [fill-only]]
# appends APPEND events (PACE_MS apart, 0 = all at once, before connecting), uploads, and
# prints "DRAINED <acked>" once the platform has acknowledged everything ("fill-only": stop
# after appending).
import asyncio
import struct
import sys

from board.flashsim import FlashSim
from firmware.journal import Journal
from firmware.uplink import Uplink

image, blocks, host, port, device, boot, count = sys.argv[1:8]
pace = int(sys.argv[8]) if len(sys.argv) > 8 else 0
fill_only = len(sys.argv) > 9 and sys.argv[9] == "fill-only"
boot = int(boot)
count = int(count)

journal = Journal(FlashSim(path=image, block_size=4096, block_count=int(blocks)))
up = Uplink(journal, device, boot, "test", {"host": host, "port": int(port), "keepalive": 5},
            ack_timeout_ms=1500)


def append(i):
    seq = journal.append(1, 0, boot, i, 0, i & 0xFFFF, struct.pack("<I", i))
    print("APPENDED", seq)
    up.kick()


async def main():
    if not pace:
        for i in range(count):
            journal.append(1, 0, boot, i, 0, i & 0xFFFF, struct.pack("<I", i))
        print("APPENDED", journal.next_seq - 1)
        if fill_only:
            return
    task = asyncio.create_task(up.run())
    if pace:
        for i in range(count):
            append(i)
            await asyncio.sleep_ms(pace)
    while journal.depth() > 0:
        await asyncio.sleep_ms(20)
    print("DRAINED", journal.acked, "resends", up.resends)
    task.cancel()


asyncio.run(main())
