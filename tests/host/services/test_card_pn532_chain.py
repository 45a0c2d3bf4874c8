"""The whole card path of a door: a card issued with the personalizer, read by the door's card step
through the firmware's PN532 driver, PN532 frames to the host emulator, pcscd, vpcd and the
virtual card."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from card_reader import card_session as cs
from host_tools.cards import pcsc, sitekeys, vcard
from host_tools.cards.personalize import personalize
from host_tools.pn532_emu import LocalCard, PN532Emulator, SocketStream
from host_tools.pn532_sync import PN532

SLOT = 1
READER = "Virtual PCD 00 01"
PORT = vcard.vpcd_port(SLOT)  # this run's pcscd (tests/conftest.py)


@pytest.fixture(scope="module")
def pcscd_service() -> Iterator[list[subprocess.Popen[bytes]]]:
    """pcscd is one service for every user of the machine: started here only when it is not
    running, checked again before each test (someone else may have stopped it), stopped at the
    end only if started here."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.terminate()
            proc.wait(10)


@pytest.fixture
def pcscd(pcscd_service: list[subprocess.Popen[bytes]]) -> None:
    proc = pcsc.start_pcscd()
    if proc is not None:
        pcscd_service.append(proc)
    if not pcsc.wait_for_reader(READER):
        pytest.fail("pcscd with vsmartcard-vpcd did not show a Virtual PCD reader")


@pytest.fixture
def issued_card(pcscd: None, tmp_path: Path) -> Iterator[tuple[vcard.VirtualDesfire, bytes, Path]]:
    keys = tmp_path / "site.json"
    sitekeys.write_secret(keys, sitekeys.new_site_keys(77))
    _, store = sitekeys.load(keys, need_issuing=True)
    card = vcard.VirtualDesfire(str(tmp_path / "card.json"))
    client = vcard.VpcdClient(card, port=PORT).start()
    try:
        conn, transceive = pcsc.wait_for_card(READER)
        issued = personalize(transceive, store)
        pcsc.close(conn)
        yield card, issued.ref, keys
    finally:
        client.stop()
        pcsc.wait_until_absent(READER)


@pytest.fixture
def rig(pcscd: None) -> Iterator[tuple[PN532Emulator, socket.socket]]:
    a, b = socket.socketpair()
    emu = PN532Emulator()
    link = emu.serve(b)
    try:
        emu.present(READER)
        yield emu, a
    finally:
        emu.remove()
        link.close()
        a.close()


def test_door_reads_issued_card_through_pn532(issued_card: tuple[vcard.VirtualDesfire, bytes, Path],
                                              rig: tuple[PN532Emulator, socket.socket]) -> None:
    card, ref, keys = issued_card
    _, door_store = sitekeys.load(keys)
    _, sock = rig
    driver = PN532(SocketStream(sock), ack_timeout_ms=200)
    driver.begin()
    target = driver.list_target()
    assert target is not None and target.uid == card.uid and target.iso_dep()
    result = cs.CardSession(door_store).read(driver.transceive, target.uid, target.sak)
    assert result.ok and result.ref == ref and result.profile == "desfire_ev2"


def test_clone_through_pn532_is_refused(issued_card: tuple[vcard.VirtualDesfire, bytes, Path],
                                        rig: tuple[PN532Emulator, socket.socket]) -> None:
    card, _ref, keys = issued_card
    _, store = sitekeys.load(keys)
    emu, sock = rig
    # in the field instead of the issued card: its clone (same UID and files, keys unknown)
    clone = vcard.clone_of(card)
    emu.present(LocalCard(clone.process, clone.uid))
    driver = PN532(SocketStream(sock), ack_timeout_ms=200)
    driver.begin()
    target = driver.list_target()
    assert target is not None and target.uid == card.uid
    result = cs.CardSession(store).read(driver.transceive, target.uid, target.sak)
    assert result.reason == "auth_failed" and result.ref is None
