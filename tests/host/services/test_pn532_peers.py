"""The PN532 emulator against host software nobody here wrote: nfcpy's full stack
(`ContactlessFrontend('tty:…:pn532')`: Diagnose, SetParameters, every RFConfiguration item,
registers, SetSerialBaudRate, RATS and ISO-DEP through InCommunicateThru) and Adafruit's
CircuitPython PN532 driver (InListPassiveTarget held while the field is empty, as the chip does
until MaxRetries is set), each on a pty as it would be on a USB-serial adapter."""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from card_reader.pn532 import CMD_IN_LIST_PASSIVE_TARGET
from host_tools.cards import vcard
from host_tools.pn532_emu import LocalCard, PN532Emulator

nfc = pytest.importorskip("nfc")
serial = pytest.importorskip("serial")


def _import_adafruit_uart() -> Any:
    """Adafruit's driver (installed without Adafruit-Blinka, see ./dev). It imports names from
    CircuitPython's hardware modules, for pins and type hints this test has none of
    (`digitalio.Direction/DigitalInOut`, `busio.UART`, `micropython.const`,
    `circuitpython_typing.ReadableBuffer`): they are given for the import, then taken back."""
    names: dict[str, dict[str, Any]] = {
        "digitalio": {"Direction": type("Direction", (), {"INPUT": 0, "OUTPUT": 1}),
                      "DigitalInOut": object},
        "busio": {"UART": object},
        "micropython": {"const": lambda x: x},
        "circuitpython_typing": {"ReadableBuffer": bytes},
    }
    saved = {name: sys.modules.get(name) for name in names}
    for name, attrs in names.items():
        shim = types.ModuleType(name)
        shim.__dict__.update(attrs)
        sys.modules[name] = shim
    try:
        import adafruit_pn532.uart as uart
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return uart


adafruit_uart = _import_adafruit_uart()

GET_VERSION = bytes.fromhex("9060000000")  # DESFire GetVersion, wrapped: 91 AF + 7 bytes


def desfire() -> LocalCard:
    card = vcard.VirtualDesfire()
    return LocalCard(card.process, card.uid)


@pytest.fixture
def pty_reader(tmp_path: Path) -> Iterator[tuple[PN532Emulator, str]]:
    """The emulator on a pty's master; yields it and the slave's path for the host software."""
    master, slave = os.openpty()
    emu = PN532Emulator()
    link = emu.serve_fd(master)
    try:
        yield emu, os.ttyname(slave)
    finally:
        link.close()
        os.close(slave)


@pytest.fixture
def dev_name(pty_reader: tuple[PN532Emulator, str]) -> Iterator[str]:
    """nfcpy names a tty by its name in /dev (no slashes): link one to the pty."""
    name = f"ttyDOORCTL{os.getpid()}"
    link = Path("/dev") / name
    try:
        link.symlink_to(pty_reader[1])
    except OSError as e:
        pytest.skip(f"cannot name the pty in /dev for nfcpy ({e}); run as root")
    try:
        yield name
    finally:
        link.unlink()


def test_nfcpy_opens_the_emulator_senses_a_desfire_and_exchanges_an_apdu(
        pty_reader: tuple[PN532Emulator, str], dev_name: str) -> None:
    emu, _ = pty_reader
    clf = nfc.ContactlessFrontend()
    assert clf.open(f"tty:{dev_name}:pn532"), "nfcpy did not accept the emulator as a PN532"
    try:
        assert "PN532" in str(clf.device)
        target = nfc.clf.RemoteTarget("106A")
        assert clf.sense(target) is None  # empty field: no target, no error
        card = desfire()
        emu.present(card)
        found = clf.sense(target)
        assert found is not None
        assert bytes(found.sdd_res) == card.uid and found.sel_res[0] & 0x20
        tag = clf.connect(rdwr={"targets": ["106A"], "on-connect": lambda tag: False})
        assert tag is not None and tag.type == "Type4Tag"
        answer = tag.transceive(GET_VERSION)
        assert answer[-2:] == b"\x91\xaf" and len(answer) == 9
        long_answer = tag.transceive(bytes.fromhex("90AF000000"))  # the next part of GetVersion
        assert long_answer[-2:] == b"\x91\xaf"
    finally:
        clf.close()
    assert 0x42 in emu.commands  # ISO-DEP went through InCommunicateThru
    assert not emu.errors


def adafruit_driver(path: str) -> tuple[object, object]:
    port = serial.Serial(path, 115200, timeout=0.1)
    return port, adafruit_uart.PN532_UART(port, debug=False)


def present_after_second_list(emu: PN532Emulator, card: LocalCard) -> None:
    deadline = time.monotonic() + 2
    while emu.commands.count(CMD_IN_LIST_PASSIVE_TARGET) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    emu.present(card)


def test_adafruit_driver_waits_on_an_empty_field_then_reads_the_card(
        pty_reader: tuple[PN532Emulator, str]) -> None:
    emu, path = pty_reader
    port, pn = adafruit_driver(path)
    try:
        assert pn.firmware_version == (0x32, 1, 6, 7)  # type: ignore[attr-defined]
        # MaxRetries never set: the chip keeps the command until a card comes, so the driver
        # times out with None, never "More than one card detected!".
        started = time.monotonic()
        assert pn.read_passive_target(timeout=0.3) is None  # type: ignore[attr-defined]
        assert time.monotonic() - started >= 0.25
        # The first command is still held. A card placed before the driver sends its next
        # one would answer that command into the driver's wait for an ACK (a real chip does the
        # same), so the card comes once the second InListPassiveTarget has replaced it.
        card = desfire()
        arrives = threading.Thread(target=present_after_second_list, args=(emu, card))
        arrives.start()
        try:
            assert bytes(pn.read_passive_target(timeout=1)) == card.uid  # type: ignore[attr-defined]
        finally:
            arrives.join()
        answer = pn.call_function(0x40, params=b"\x01" + GET_VERSION,  # type: ignore[attr-defined]
                                  response_length=20)
        assert answer[0] == 0x00 and bytes(answer[-2:]) == b"\x91\xaf"
    finally:
        port.close()  # type: ignore[attr-defined]


def test_a_held_list_answers_as_soon_as_a_card_arrives(pty_reader: tuple[PN532Emulator, str]) -> None:
    emu, path = pty_reader
    port, pn = adafruit_driver(path)
    try:
        pn.listen_for_passive_target()  # type: ignore[attr-defined]
        time.sleep(0.1)
        assert pn.get_passive_target(timeout=0.05) is None  # type: ignore[attr-defined]
        card = desfire()
        emu.present(card)
        assert bytes(pn.get_passive_target(timeout=1)) == card.uid  # type: ignore[attr-defined]
    finally:
        port.close()  # type: ignore[attr-defined]


def test_a_new_baud_rate_takes_effect_after_the_hosts_ack() -> None:
    """SetSerialBaudRate answers at the old rate; the chip switches once the host ACKs it."""
    from card_reader import pn532 as p

    emu = PN532Emulator()
    rates: list[int] = []
    emu.on_baudrate = rates.append
    out = emu.receive(p.encode_frame(p.TFI_HOST, b"\x10\x07"))  # 921,600 baud
    assert out == p.ACK + p.encode_frame(p.TFI_PN532, b"\x11")
    assert emu.baudrate == 115200 and rates == []
    emu.receive(p.ACK)
    assert emu.baudrate == 921600 and rates == [921600]
    assert emu.receive(p.encode_frame(p.TFI_HOST, b"\x10\x09")) == p.ACK + p.ERROR_FRAME  # no such rate
