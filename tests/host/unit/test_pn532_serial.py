"""The PN532 emulator's serial transport: the device's PN532 driver on one end of a pty (the
door's reader UART), the emulator on the other through pyserial, as on a bench where the UART
goes to a USB-serial adapter."""

from __future__ import annotations

import os
import select
import tty
from collections.abc import Iterator

import pytest

from card_reader import pn532 as p
from host_tools.cards import vcard
from host_tools.pn532_emu import LocalCard, PN532Emulator
from host_tools.pn532_sync import PN532

GET_VERSION = bytes.fromhex("9060000000")


class FdStream:
    """The blocking driver's stream over a file descriptor (the pty's door side)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return os.write(self.fd, bytes(data))

    def read(self, n: int, timeout_ms: int) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout_ms / 1000)
        return os.read(self.fd, n) if ready else b""


@pytest.fixture
def uart() -> Iterator[tuple[PN532Emulator, PN532]]:
    door_side, host_side = os.openpty()
    tty.setraw(host_side)
    emu = PN532Emulator()
    link = emu.open_serial(os.ttyname(host_side))
    try:
        yield emu, PN532(FdStream(door_side), ack_timeout_ms=100)
    finally:
        link.close()
        os.close(door_side)
        os.close(host_side)


def test_the_door_reads_a_card_through_the_serial_port(uart: tuple[PN532Emulator, PN532]) -> None:
    emu, reader = uart
    assert reader.begin() == b"\x32\x01\x06\x07"
    assert reader.list_target() is None  # empty field
    card = vcard.VirtualDesfire()
    emu.present(LocalCard(card.process, card.uid))
    target = reader.list_target()
    assert target is not None and target.uid == card.uid
    assert reader.transceive(GET_VERSION)[-1:] == b"\xaf"  # the card's answer, relayed
    assert emu.apdus == 1 and p.CMD_IN_DATA_EXCHANGE in emu.commands


def test_a_missing_serial_port_is_named() -> None:
    with pytest.raises(OSError, match="serial port /dev/ttyUSB9"):
        PN532Emulator().open_serial("/dev/ttyUSB9")
