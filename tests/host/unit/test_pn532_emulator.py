"""The device's PN532 driver (blocking core, on CPython) against the host's PN532 emulator over a
socket pair: the card flow, cards leaving and doubling up, and every misbehaviour the emulator can
inject turning into a PN532Error (or a recovery) rather than a crash or a hang."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from itertools import groupby

import pytest

from card_reader import pn532 as p
from host_tools.cards import vcard
from host_tools.pn532_emu import LocalCard, PcscSlot, PN532Emulator, SocketStream
from host_tools.pn532_sync import PN532, PollStream

SELECT_DESFIRE_AID = bytes.fromhex("00A4040007D276000085010100")
GET_VERSION = bytes.fromhex("9060000000")


@pytest.fixture
def rig() -> Iterator[tuple[PN532Emulator, PN532]]:
    a, b = socket.socketpair()
    emu = PN532Emulator()
    link = emu.serve(b)
    driver = PN532(SocketStream(a), ack_timeout_ms=100)
    try:
        yield emu, driver
    finally:
        link.close()
        a.close()


def desfire() -> tuple[vcard.VirtualDesfire, LocalCard]:
    card = vcard.VirtualDesfire()
    return card, LocalCard(card.process, card.uid)


def code_of(fn) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(p.PN532Error) as e:
        fn()
    return e.value.code


def test_begin_reports_the_firmware_version(rig: tuple[PN532Emulator, PN532]) -> None:
    emu, d = rig
    assert d.begin() == bytes.fromhex("32010607")
    # Each command once, in order; a copy sent again after an ACK that came late (the link
    # thread held up past the 100 ms timeout) follows its original, and counts as a resend.
    deadline = time.monotonic() + 5
    while len(emu.commands) < d.core.frames and time.monotonic() < deadline:
        time.sleep(0.01)  # a copy sent again may still be on its way
    assert [c for c, _ in groupby(emu.commands)] == [
        p.CMD_SAM_CONFIGURATION, p.CMD_RF_CONFIGURATION, p.CMD_GET_FIRMWARE_VERSION]
    assert len(emu.commands) == d.core.frames and d.core.frames - d.core.resends == 3


def test_empty_field_lists_no_target(rig: tuple[PN532Emulator, PN532]) -> None:
    emu, d = rig
    d.begin()
    assert d.list_target() is None
    assert code_of(lambda: d.exchange(GET_VERSION)) == p.E_NO_CARD


def test_card_uid_sak_ats_and_apdus(rig: tuple[PN532Emulator, PN532]) -> None:
    emu, d = rig
    card, local = desfire()
    emu.present(local)
    d.begin()
    t = d.list_target()
    assert t is not None
    assert t.uid == card.uid and len(t.uid) == 7 and t.sak == 0x20 and t.atqa == b"\x03\x44"
    assert t.ats[0] == len(t.ats)
    r = d.transceive(GET_VERSION)
    assert r == card.process(GET_VERSION) or r[-2:] == b"\x91\xaf"
    assert emu.apdus == 1
    assert d.release() == 0


def test_card_removed_mid_exchange_is_card_lost(rig: tuple[PN532Emulator, PN532]) -> None:
    emu, d = rig
    _, local = desfire()
    emu.present(local)
    d.begin()
    assert d.list_target() is not None
    d.transceive(GET_VERSION)
    emu.remove()
    e = pytest.raises(p.PN532Error, d.transceive, GET_VERSION).value
    assert e.code == p.E_CARD_LOST and e.reason == "card_lost" and e.detail == p.ST_TIMEOUT
    assert d.list_target() is None


def test_two_cards_are_refused(rig: tuple[PN532Emulator, PN532]) -> None:
    emu, d = rig
    emu.present(desfire()[1], desfire()[1])
    d.begin()
    assert code_of(d.list_target) == p.E_TWO_CARDS
    assert emu.commands[-1] == p.CMD_IN_RELEASE
    t = d.list_target(max_targets=1)  # asked for one, the PN532 selects one
    assert t is not None


def test_four_and_ten_byte_uids(rig: tuple[PN532Emulator, PN532]) -> None:
    emu, d = rig
    for uid, sak in ((bytes.fromhex("11223344"), 0x08), (bytes(range(1, 11)), 0x20)):
        emu.present(LocalCard(lambda a: b"\x90\x00", uid, sak=sak))
        t = d.list_target()
        assert t is not None and t.uid == uid and t.sak == sak
        assert (t.ats != b"") == bool(sak & 0x20)


@pytest.mark.parametrize("fault", ["bad_dcs", "bad_lcs", "no_ack"])
def test_recoverable_faults_are_retried(rig: tuple[PN532Emulator, PN532], fault: str) -> None:
    emu, d = rig
    emu.inject(fault)
    assert d.firmware_version() == bytes.fromhex("32010607")
    assert d.core.resends >= 1


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("wrong_tfi", p.E_WRONG_TFI),
        ("wrong_code", p.E_WRONG_RESPONSE),
        ("error_frame", p.E_ERROR_FRAME),
        ("oversize", p.E_TOO_LONG),
        ("silence", p.E_NO_ANSWER),
        ("truncated", p.E_NO_ANSWER),
        ("garbage", p.E_NO_ANSWER),
    ],
)
def test_faults_become_pn532_errors(rig: tuple[PN532Emulator, PN532], fault: str, code: int) -> None:
    emu, d = rig
    emu.inject(fault)
    assert code_of(lambda: d.firmware_version(), ) == code
    # the link works again afterwards
    assert d.firmware_version() == bytes.fromhex("32010607")


def test_persistent_checksum_errors_give_up(rig: tuple[PN532Emulator, PN532]) -> None:
    emu, d = rig
    emu.inject("bad_dcs")
    emu.corrupt_resends = True
    assert code_of(d.firmware_version) == p.E_CHECKSUM
    assert emu.nacks == d.core.retries  # the first frame and each resend were bad


def test_emulator_rejects_unknown_commands_with_the_error_frame() -> None:
    emu = PN532Emulator()
    out = emu.receive(p.encode_frame(p.TFI_HOST, b"\x60"))
    assert out == p.ACK + p.ERROR_FRAME
    assert emu.receive(p.WAKEUP + b"\x01\x02\x03") == b""


def test_closed_link_is_not_connected() -> None:
    a, b = socket.socketpair()
    b.close()
    d = PN532(SocketStream(a))
    assert code_of(d.firmware_version) == p.E_NOT_CONNECTED
    a.close()


def test_blocking_driver_over_a_polled_socket() -> None:
    a, b = socket.socketpair()
    emu = PN532Emulator()
    card, local = desfire()
    emu.present(local)
    with emu.serve(b):
        d = PN532(PollStream(a))
        assert d.begin() == bytes.fromhex("32010607")
        t = d.list_target()
        assert t is not None and t.uid == card.uid
        assert d.transceive(GET_VERSION)[-2:] == b"\x91\xaf"
    a.close()


def _site_stores() -> tuple[object, object]:
    from crypto.keystore import SoftwareKeyStore
    from host_tools.cards import sitekeys

    site = sitekeys.new_site_keys(4242)
    door = sitekeys.device_keys(site, "emu.b1.d1")
    return SoftwareKeyStore.from_dict(site), SoftwareKeyStore.from_dict(door)


def test_door_card_session_through_the_reader(rig: tuple[PN532Emulator, PN532]) -> None:
    from card_reader import card_session as cs
    from host_tools.cards.personalize import personalize

    emu, d = rig
    site_store, door_store = _site_stores()
    card, local = desfire()
    issued = personalize(card.process, site_store)  # type: ignore[arg-type]
    emu.present(local)
    d.begin()
    t = d.list_target()
    assert t is not None
    result = cs.CardSession(door_store).read(d.transceive, t.uid, t.sak)
    assert result.ok and result.ref == issued.ref and result.profile == "desfire_ev2"
    # the card taken away after its second APDU: the session ends as card_lost, not a crash
    d.list_target()
    count = [0]

    def leaving(apdu: bytes) -> bytes:
        count[0] += 1
        if count[0] == 2:
            local.present = False
        return card.process(apdu)

    local._process = leaving
    result = cs.CardSession(door_store).read(d.transceive, t.uid, t.sak)
    assert not result.ok and result.reason == "card_lost"


def test_long_answers_come_in_chained_parts(rig: tuple[PN532Emulator, PN532]) -> None:
    emu, d = rig
    long = bytes(range(256)) * 2 + b"\x90\x00"
    emu.present(LocalCard(lambda apdu: long, bytes.fromhex("11223344"), sak=0x20))
    assert d.list_target() is not None
    assert d.exchange(b"\x00\xb0\x00\x00\x00") == long
    assert emu.commands.count(p.CMD_IN_DATA_EXCHANGE) == 2


def test_a_failing_card_object_gives_the_error_frame(rig: tuple[PN532Emulator, PN532]) -> None:
    emu, d = rig

    def broken(apdu: bytes) -> bytes:
        raise RuntimeError("card model bug")

    emu.present(LocalCard(broken, bytes.fromhex("11223344"), sak=0x20))
    assert d.list_target() is not None
    assert code_of(lambda: d.exchange(b"\x00")) == p.E_ERROR_FRAME
    assert emu.errors and "card model bug" in emu.errors[0]
    assert d.firmware_version() == bytes.fromhex("32010607")


class SlowSlot(PcscSlot):
    """A PC/SC reader whose card takes a second to connect (pcscd and vpcd under load)."""

    def __init__(self, card: LocalCard) -> None:
        super().__init__("slow")
        self._card = card
        self.connects = 0

    def _connect(self) -> LocalCard | None:  # type: ignore[override]
        self.connects += 1
        time.sleep(1.0)
        self.card = self._card  # type: ignore[assignment]
        return self._card

    def close(self) -> None:
        self.card = None


def test_the_link_keeps_acking_while_a_held_command_activates_a_slow_card() -> None:
    """A card comes while InListPassiveTarget is held and connecting it takes a second: the
    host's next command is ACKed at once all the same (no resend), as a PN532 does, and the
    card found for the held command is not taken from under the command that ended it."""
    a, b = socket.socketpair()
    emu = PN532Emulator()
    link = emu.serve(b)
    driver = PN532(SocketStream(a), ack_timeout_ms=300)
    try:
        driver.begin()
        driver.rf_retries(p.RETRY_FOREVER)
        assert driver.wait_target(50) is None  # held: the field is empty
        card = vcard.VirtualDesfire()
        slot = SlowSlot(LocalCard(card.process, card.uid))
        emu.present(slot)
        time.sleep(0.1)  # the link is connecting the card for the held command now
        assert driver.firmware_version() == b"\x32\x01\x06\x07"  # ends the wait, then asks
        assert driver.core.resends == 0
        target = driver.list_target(3000)
        assert target is not None and target.uid == card.uid
        assert driver.exchange(bytes.fromhex("9060000000"))[-2:] == b"\x91\xaf"
    finally:
        link.close()
        a.close()
