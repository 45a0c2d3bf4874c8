"""Reader drivers: which card is in the door's field. Both answer the door's reader link with
the PN532 emulator, which relays the door's APDUs to a card behind pcscd; they differ in where
the card is and how the link reaches the door.

- `VpcdReader` (virtual rig): the virtual card on vsmartcard's vpcd reader, the emulator on
  the virtual device's reader socket.
- `BenchReader` (bench): each card on its own PC/SC reader (`[cards]`, a changer for shared
  ones: hil/drivers/cards.py), the emulator on the serial port wired to the door's reader UART.
"""

from __future__ import annotations

import time
from typing import Any

from card_reader.pn532 import CMD_IN_LIST_PASSIVE_TARGET
from hil.drivers.cards import BenchCards
from hil.rig import RigError, wait_for
from host_tools.cards import pcsc, vcard
from host_tools.pn532_emu import EmulatorLink, PN532Emulator, release_connection
from host_tools.vdev.device import VirtualDevice

VPCD_READER = "Virtual PCD 00 00"
ABSENT_S = 0.6  # the door's absent_ms (300) and a margin for a loaded machine


class VpcdReader:
    def __init__(self, dev: VirtualDevice, cards: dict[str, Any]) -> None:
        self.dev = dev
        self.cards = cards  # role -> host_tools.cards.vcard card
        self.emu = PN532Emulator()
        self.link: Any = None
        self._client: vcard.VpcdClient | None = None

    def connect(self) -> None:
        self.link = self.emu.connect(self.dev.reader_addr)

    def disconnect(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    def place(self, name: str) -> str:
        self._client = vcard.VpcdClient(self.cards[name], port=vcard.vpcd_port()).start()
        release_connection(pcsc.wait_for_card(VPCD_READER)[0])
        return VPCD_READER

    def present(self, reader: str) -> None:
        self.emu.present(reader)

    def remove(self) -> None:
        self.emu.remove()
        if self._client is not None:
            self._client.stop()
            self._client = None
            pcsc.wait_until_absent(VPCD_READER)

    def close(self) -> None:
        self.remove()
        self.disconnect()


class BenchReader:
    def __init__(self, cards: BenchCards, port: str) -> None:
        self.cards = cards
        self.emu = PN532Emulator()
        try:
            self.link: EmulatorLink = self.emu.open_serial(port)
        except OSError as e:
            raise RigError(f"[reader] port: {e}") from None

    def connect(self) -> None:
        """The serial link stays open across power cycles."""

    def disconnect(self) -> None:
        pass

    def place(self, name: str) -> str:
        return self.cards.place(name)

    def present(self, reader: str) -> None:
        self.emu.present(reader)

    def remove(self) -> None:
        """Take the card out of the field until the door has seen the field empty long enough
        to end the presentation: a door does not read a card again that never left. The door
        lets the PN532 wait for a card (one InListPassiveTarget pending on the empty field, not
        a poll every few ms), so: its next InListPassiveTarget after the card left, then the
        door's absent_ms (firmware/card_task.py, 300 ms) with a margin."""
        self.emu.remove()
        seen = len(self.emu.commands)
        wait_for(lambda: CMD_IN_LIST_PASSIVE_TARGET in self.emu.commands[seen:], 10,
                 "the door to see its field empty")
        time.sleep(ABSENT_S)

    def close(self) -> None:
        self.emu.remove()
        self.link.close()
