# A door controller reduced to its journal and uplink, run under the MicroPython unix port by
# the uplink benchmark and the end-to-end uplink tests:
#   micropython uplink_device.py IMAGE BLOCKS HOST PORT DEVICE BOOT APPEND [PACE_MS [OPTION...]]
# appends APPEND events (PACE_MS apart, 0 = all at once, before connecting), uploads, and
# prints "DRAINED <acked> resends <n> lost <n>" once the platform has acknowledged everything
# (then its status and micropython.qstr_info()).
# Options: "fill-only" (stop after appending), "key=HEX" (the site's command key: acks must
# carry the platform's MAC, as on a commissioned door), "user=NAME" and "password=PW" (the
# broker login), "cut=N" (a power cut that tears the journal's N-th flash program or erase
# from now: the process ends there, the image keeps what a real chip would).
import asyncio
import json
import struct
import sys

import micropython

from board.vdev.flashsim import FlashSim
from firmware.journal import Journal
from firmware.uplink import Uplink

image, blocks, host, port, device, boot, count = sys.argv[1:8]
pace = int(sys.argv[8]) if len(sys.argv) > 8 else 0
options = sys.argv[9:]
fill_only = "fill-only" in options
boot = int(boot)
count = int(count)

flash = FlashSim(path=image, block_size=4096, block_count=int(blocks))
journal = Journal(flash)
up = Uplink(journal, device, boot, "test", {"host": host, "port": int(port), "keepalive": 5},
            ack_timeout_ms=1500)
for o in options:
    if o.startswith("user=") or o.startswith("password="):
        k, _, v = o.partition("=")
        up.broker[k] = v
    if o.startswith("key="):
        from crypto.keystore import SoftwareKeyStore

        up.keystore = SoftwareKeyStore(1, b"\x00" * 8, {"command": bytes.fromhex(o[4:])})
    if o.startswith("cut="):
        flash.cut_after(int(o[4:]))
T0 = 1767225600  # events carry UTC times from here (+ their number): gap time spans are exact


def append(i):
    seq = journal.append(1, 1, boot, T0 + i, 0, i & 0xFFFF, struct.pack("<I", i))
    print("APPENDED", seq)
    up.kick()


async def main():
    if not pace:
        for i in range(count):
            journal.append(1, 1, boot, T0 + i, 0, i & 0xFFFF, struct.pack("<I", i))
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
    print("DRAINED", journal.acked, "resends", up.resends, "lost", journal.lost)
    print("STATUS", json.dumps(up.status))
    micropython.qstr_info()  # the names interned in RAM pools (uplink.qstr_headroom)
    task.cancel()


asyncio.run(main())
