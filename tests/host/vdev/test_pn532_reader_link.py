"""The emulator on a running virtual device's reader link: a console program in the firmware's
process drives `board.reader_uart` with the asyncio PN532 driver, and the host's emulator answers
with a virtual DESFire card's UID and APDU answers.

(The program borrows the reader from the firmware's card task, as the installer's self-test does;
the card task itself is exercised end to end in vdev/test_card_flow.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from host_tools.cards import vcard
from host_tools.pn532_emu import LocalCard, PN532Emulator
from host_tools.vdev.device import VirtualDevice
from tests.reader_loan import BORROW_READER

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))

PROGRAM = """
import asyncio
from firmware.main import running
from card_reader.pn532 import AsyncPN532, PN532Error

async def go():
""" + BORROW_READER + """
    uart = running["board"].reader_uart
    for _ in range(500):
        if uart.connected():
            break
        await asyncio.sleep_ms(10)
    d = AsyncPN532(uart)
    print("FW", (await d.begin()).hex())
    t = await d.list_target()
    print("UID", t.uid.hex(), t.sak)
    print("R", (await d.exchange(b"\\x90\\x60\\x00\\x00\\x00")).hex())
    try:
        await d.exchange(b"\\x90\\xaf\\x00\\x00\\x00")
    except PN532Error as e:
        print("ERR", e.reason)

asyncio.run(go())
"""


def test_firmware_process_reads_a_card_through_the_emulator(tmp_path: Path) -> None:
    card = vcard.VirtualDesfire()
    local = LocalCard(card.process, card.uid)

    def process(apdu: bytes) -> bytes:
        local.present = False  # answers the first APDU, then leaves the field
        return card.process(apdu)

    local._process = process
    emu = PN532Emulator()
    emu.present(local)
    with VirtualDevice(tmp_path / "door") as dev, emu.connect(dev.reader_addr):
        out = subprocess.run([MPREMOTE, "connect", dev.pty, "exec", PROGRAM], capture_output=True,
                             text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert lines["FW"] == "32010607"
    assert lines["UID"] == f"{card.uid.hex()} 32"
    assert lines["R"].endswith("91af")
    assert lines["ERR"] == "card_lost"
    assert emu.commands[-6:-2] == [0x14, 0x32, 0x02, 0x4A] and emu.apdus == 2
