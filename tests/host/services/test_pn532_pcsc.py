"""The PN532 emulator relaying the driver's APDUs to a card through real pcscd + vsmartcard vpcd +
pyscard: UID from the reader's FF CA pseudo-APDU, SAK and ATS from the ATR, a SELECT relayed to a
virtual card, and the card leaving the field turning into card_lost at the driver."""

from __future__ import annotations

import gc
import socket
import subprocess
from collections.abc import Iterator

import pytest

from card_reader import pn532 as p
from host_tools.cards import pcsc, vcard
from host_tools.pn532_emu import PN532Emulator, SocketStream, release_connection
from host_tools.pn532_sync import PN532

SLOT = 0
READER = "Virtual PCD 00 00"
PORT = vcard.vpcd_port(SLOT)  # this run's pcscd (tests/conftest.py)
SELECT_PICC = bytes.fromhex("00A4040007D276000085010100")


class IsoCard:
    """The smallest ISO 7816-4 card: answers SELECT by AID, records what it saw."""

    atr = bytes.fromhex("3B 88 80 01 20 90 00 00 00 00 00 00 B9")

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def process(self, apdu: bytes) -> bytes:
        self.seen.append(apdu)
        if apdu[:4] == b"\x00\xa4\x04\x00":
            return b"\x6f\x00\x90\x00"
        return b"\x6d\x00"

    def reset(self) -> None:
        pass


@pytest.fixture(scope="module")
def pcscd_started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """pcscd serves every user of the machine: started here only when none answers (checked
    before each test), stopped at the end only if started here."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        gc.collect()  # pyscard releases its contexts in __del__: before pcscd stops
        for proc in started:
            proc.terminate()
            proc.wait(10)


@pytest.fixture
def pcscd(pcscd_started: list[subprocess.Popen[bytes]]) -> None:
    proc = pcsc.start_pcscd()
    if proc is not None:
        pcscd_started.append(proc)
    if not pcsc.wait_for_reader(READER):
        pytest.fail("pcscd with vsmartcard-vpcd did not show a Virtual PCD reader")


@pytest.fixture
def rig(pcscd: None) -> Iterator[tuple[PN532Emulator, PN532]]:
    a, b = socket.socketpair()
    emu = PN532Emulator()
    link = emu.serve(b)
    driver = PN532(SocketStream(a), ack_timeout_ms=200)
    driver.begin()  # as the door does: MaxRetries set, so an empty field answers at once
    try:
        yield emu, driver
    finally:
        emu.remove()
        link.close()
        a.close()


def test_select_is_relayed_to_a_virtual_card(rig: tuple[PN532Emulator, PN532]) -> None:
    emu, d = rig
    card = IsoCard()
    client = vcard.VpcdClient(card, port=PORT).start()
    try:
        release_connection(pcsc.wait_for_card(READER)[0])
        emu.present(READER)
        d.begin()
        t = d.list_target()
        assert t is not None and t.sak == 0x20 and t.ats[0] == len(t.ats)
        assert len(t.uid) in (4, 7, 10)
        assert d.transceive(SELECT_PICC) == b"\x6f\x00\x90\x00"
        assert SELECT_PICC in card.seen
    finally:
        client.stop()
        pcsc.wait_until_absent(READER)


def test_desfire_uid_and_card_leaving(rig: tuple[PN532Emulator, PN532]) -> None:
    emu, d = rig
    card = vcard.VirtualDesfire()
    client = vcard.VpcdClient(card, port=PORT).start()
    try:
        release_connection(pcsc.wait_for_card(READER)[0])
        emu.present(READER)
        t = d.list_target()
        assert t is not None and t.uid == card.uid and t.atqa == b"\x03\x44"
        assert d.transceive(bytes.fromhex("9060000000"))[-2:] == b"\x91\xaf"
    finally:
        client.stop()
        pcsc.wait_until_absent(READER)
    e = pytest.raises(p.PN532Error, d.transceive, bytes.fromhex("90AF000000")).value
    assert e.code == p.E_CARD_LOST
    assert d.list_target() is None  # the reader is still presented: its field is empty now


def test_card_put_on_the_reader_later_is_found(rig: tuple[PN532Emulator, PN532]) -> None:
    emu, d = rig
    emu.present(READER)
    assert d.list_target() is None
    card = vcard.VirtualDesfire()
    client = vcard.VpcdClient(card, port=PORT).start()
    try:
        release_connection(pcsc.wait_for_card(READER)[0])
        t = d.list_target()
        assert t is not None and t.uid == card.uid
    finally:
        client.stop()
        pcsc.wait_until_absent(READER)


def _classic_store(key: bytes):  # type: ignore[no-untyped-def]
    from crypto.keystore import SoftwareKeyStore
    from host_tools.cards.kit import SiteKit

    site = SiteKit()
    site.keys["keys"]["classic_a"] = key.hex()
    return SoftwareKeyStore.from_dict(site.keys)


def test_a_classic_card_on_a_pcsc_reader_is_read_by_the_legacy_profile(
        rig: tuple[PN532Emulator, PN532]) -> None:
    from card_reader import card_session as cs
    from wire import card_profile as profile

    emu, d = rig
    key = bytes.fromhex("a0a1a2a3a4a5")
    card = vcard.ClassicCard(bytes.fromhex("c1a551c0"))
    card.set_key_a(1, key)
    card.write_block(4, b"resident-0042")
    store = _classic_store(key)
    client = vcard.VpcdClient(card, port=PORT).start()
    try:
        release_connection(pcsc.wait_for_card(READER)[0])
        emu.present(READER)
        t = d.list_target()
        assert t is not None and t.sak == 0x08 and t.uid == card.uid
        result = cs.CardSession(store, legacy_classic=True).read(d.transceive, t.uid, t.sak)
        assert result.ok and result.low_assurance and result.profile == "classic"
        assert result.ref == profile.classic_ref(store, card.blocks[4])
        # Without the sector key (a door of another site, a wrong key): not read.
        t = d.list_target()
        assert t is not None
        other = cs.CardSession(_classic_store(bytes(6)), legacy_classic=True)
        assert other.read(d.transceive, t.uid, t.sak).code == cs.CARD_LOST
        # Legacy profiles off (the default): a Classic card is not a door card.
        assert cs.CardSession(store).read(d.transceive, t.uid, t.sak).code == cs.UNSUPPORTED_CARD
    finally:
        client.stop()
        pcsc.wait_until_absent(READER)
