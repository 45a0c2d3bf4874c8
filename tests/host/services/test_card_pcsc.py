"""Cards end to end through real pcscd + vsmartcard vpcd + pyscard: issuing a virtual blank
DESFire card with `doorctl card personalize`, then the door's card session on it, clones, other
sites, a card pulled mid-authentication, and the personalizer's errors."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from card_reader import card_session as cs
from host_tools.cards import pcsc, sitekeys, vcard
from host_tools.cards.personalize import personalize
from host_tools.errors import EXIT_FAILED, EXIT_NO_DEVICE, EXIT_USAGE, UserError

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
SLOT = 1  # "Virtual PCD 00 01" on port 35964
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


def _card_absent() -> bool:
    return not pcsc.card_present(READER)


@contextmanager
def inserted(card: vcard.Card, **kw: Any) -> Iterator[tuple[Any, pcsc.Transceive, vcard.VpcdClient]]:
    client = vcard.VpcdClient(card, port=PORT, **kw).start()
    conn = None
    try:
        conn, transceive = pcsc.wait_for_card(READER)
        yield conn, transceive, client
    finally:
        if conn is not None:
            pcsc.close(conn)
        client.stop()
        pcsc.wait_until_absent(READER)


@contextmanager
def card_in_field(card: vcard.Card) -> Iterator[vcard.VpcdClient]:
    """A card on the reader for a doorctl process to use (this process holds no connection)."""
    with inserted(card) as (conn, _t, client):
        pcsc.close(conn)
        yield client


def doorctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOORCTL, "card", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "site-keys.json"
    out = doorctl("keys", "init", "--out", str(path), "--site-id", "4242")
    assert out.returncode == 0, out.stderr
    return path


def _uid_of(transceive: pcsc.Transceive) -> bytes:
    return transceive(b"\xff\xca\x00\x00\x00")[:-2]


def _pulled_after(transceive: pcsc.Transceive, client: vcard.VpcdClient) -> pcsc.Transceive:
    """The reader side of a card that left the field: once the card has gone (after the frame
    the client's `remove_after` named), wait until pcscd has seen it go, then carry on."""

    def t(apdu: bytes) -> bytes:
        if client.leaving.is_set():
            assert client.removed.wait(10)
            assert pcsc.wait_until_absent(READER)
        return transceive(apdu)

    return t


def _personalized(site: Path, state: Path) -> str:
    with card_in_field(vcard.VirtualDesfire(str(state))):
        out = doorctl("personalize", "--keys", str(site), "--reader", READER)
    assert out.returncode == 0, out.stderr
    line = [x for x in out.stdout.splitlines() if x.startswith("card reference: ")][0]
    return line.split(": ")[1]


def test_keys_init_writes_a_private_file_and_prints_no_key(site: Path, tmp_path: Path) -> None:
    data = json.loads(site.read_text())
    assert stat.S_IMODE(os.stat(site).st_mode) == 0o600
    assert data["site_id"] == 4242 and set(data["keys"]) == {"app_master", "door_read", "card_ref",
                                                              "cache", "command", "provision",
                                                              "door_master"}
    again = doorctl("keys", "init", "--out", str(site), "--site-id", "4242")
    assert again.returncode == EXIT_USAGE and "already exists" in again.stderr
    door = tmp_path / "door.json"
    out = doorctl("keys", "door", "--keys", str(site), "--out", str(door))
    assert out.returncode == EXIT_USAGE and "--device-id" in out.stderr  # per-door: which door?
    out = doorctl("keys", "door", "--keys", str(site), "--device-id", "s.b1.d1", "--out", str(door))
    assert out.returncode == 0
    door_keys = json.loads(door.read_text())["keys"]
    assert not {"app_master", "provision", "door_master"} & set(door_keys)
    # the door's own command and cache keys, not the site's
    assert door_keys["command"] != data["keys"]["command"] and door_keys["cache"] != data["keys"]["cache"]
    for value in data["keys"].values():
        assert value not in out.stdout + out.stderr


def test_personalize_then_door_session_grants_reference(pcscd: None, site: Path, tmp_path: Path) -> None:
    state = tmp_path / "card.json"
    ref = _personalized(site, state)
    _, store = sitekeys.load(site)
    # the door's side: its key file has no application master key
    door = tmp_path / "door.json"
    out = doorctl("keys", "door", "--keys", str(site), "--device-id", "s.b1.d1", "--out", str(door))
    assert out.returncode == 0
    _, door_store = sitekeys.load(door)
    with inserted(vcard.VirtualDesfire(str(state))) as (_conn, transceive, _c):
        result = cs.CardSession(door_store).read(transceive, _uid_of(transceive), 0x20)
    assert result.ok and result.profile == "desfire_ev2" and not result.low_assurance
    assert result.ref is not None and result.ref.hex() == ref
    # the card stays personalized in its state file, and nothing secret is in the output
    assert store.site_id == 4242
    with card_in_field(vcard.VirtualDesfire(str(state))):
        out = doorctl("read", "--keys", str(door), "--reader", READER)
    assert out.returncode == 0 and ref in out.stdout
    for value in json.loads(site.read_text())["keys"].values():
        assert value not in out.stdout + out.stderr


def test_clone_with_same_uid_is_refused(pcscd: None, site: Path, tmp_path: Path) -> None:
    state = tmp_path / "card.json"
    _personalized(site, state)
    _, store = sitekeys.load(site)
    clone = vcard.clone_of(vcard.VirtualDesfire(str(state)))
    with inserted(clone) as (_conn, transceive, _c):
        uid = _uid_of(transceive)
        assert uid == vcard.VirtualDesfire(str(state)).uid
        result = cs.CardSession(store).read(transceive, uid, 0x20)
    assert not result.ok and result.reason == "auth_failed" and result.ref is None


def test_card_of_another_site_is_refused(pcscd: None, site: Path, tmp_path: Path) -> None:
    state = tmp_path / "card.json"
    _personalized(site, state)
    other = tmp_path / "other-site.json"
    assert doorctl("keys", "init", "--out", str(other), "--site-id", "7").returncode == 0
    with card_in_field(vcard.VirtualDesfire(str(state))):
        out = doorctl("read", "--keys", str(other), "--reader", READER)
    assert out.returncode == EXIT_FAILED and "card refused: auth_failed" in out.stderr


def test_card_pulled_mid_authentication(pcscd: None, site: Path, tmp_path: Path) -> None:
    state = tmp_path / "card.json"
    _personalized(site, state)
    _, store = sitekeys.load(site)
    card = vcard.VirtualDesfire(str(state))
    # the card answers the first authentication frame, then leaves the field
    with inserted(card, remove_after=lambda apdu: apdu[:2] == b"\x90\x71") as (_conn, transceive, client):
        uid = _uid_of(transceive)
        result = cs.CardSession(store).read(_pulled_after(transceive, client), uid, 0x20)
    assert client.removed.is_set()
    assert result.reason == "card_lost" and result.code == cs.CARD_LOST and result.ref is None


def test_uid_only_card_is_low_assurance_and_off_by_default(pcscd: None, site: Path) -> None:
    with card_in_field(vcard.UidOnlyCard()):
        off = doorctl("read", "--keys", str(site), "--reader", READER)
        on = doorctl("read", "--keys", str(site), "--reader", READER, "--legacy-uid")
    assert off.returncode == EXIT_FAILED and "unsupported_card" in off.stderr
    assert on.returncode == 0 and "profile uid (low assurance)" in on.stdout


def test_personalize_errors(pcscd: None, site: Path, tmp_path: Path) -> None:
    # no card on the reader
    assert _card_absent()
    out = doorctl("personalize", "--keys", str(site), "--reader", READER)
    assert out.returncode == EXIT_NO_DEVICE and "no card on" in out.stderr
    # no such reader
    out = doorctl("personalize", "--keys", str(site), "--reader", "No Such Reader")
    assert out.returncode == EXIT_NO_DEVICE and "no reader matching" in out.stderr
    # missing key file, and a door key file that cannot issue
    out = doorctl("personalize", "--keys", str(tmp_path / "none.json"), "--reader", READER)
    assert out.returncode == EXIT_USAGE and "doorctl card keys init" in out.stderr
    door = tmp_path / "door.json"
    doorctl("keys", "door", "--keys", str(site), "--device-id", "s.b1.d1", "--out", str(door))
    out = doorctl("personalize", "--keys", str(door), "--reader", READER)
    assert out.returncode == EXIT_USAGE and "site key file" in out.stderr
    # wrong card type
    with card_in_field(vcard.UidOnlyCard()):
        out = doorctl("personalize", "--keys", str(site), "--reader", READER)
    assert out.returncode == EXIT_FAILED and "not a MIFARE DESFire card" in out.stderr
    # already personalized
    state = tmp_path / "card.json"
    _personalized(site, state)
    with card_in_field(vcard.VirtualDesfire(str(state))):
        out = doorctl("personalize", "--keys", str(site), "--reader", READER)
    assert out.returncode == EXIT_FAILED and "already personalized" in out.stderr
    for stream in (out.stdout, out.stderr):
        assert "Traceback" not in stream and len(stream.strip().splitlines()) <= 1


def test_personalize_card_pulled_midway(pcscd: None, site: Path, tmp_path: Path) -> None:
    _, store = sitekeys.load(site, need_issuing=True)
    card = vcard.VirtualDesfire(str(tmp_path / "card.json"))
    # the card leaves the field right after the application is created
    with inserted(card, remove_after=lambda apdu: apdu[:2] == b"\x90\xca") as (_conn, transceive, client):
        with pytest.raises(UserError) as err:
            personalize(_pulled_after(transceive, client), store)
    assert err.value.exit_code == EXIT_FAILED
    assert "left the reader while trying to authenticate" in str(err.value)
    assert "personalize again" in str(err.value)
    # put back: the interrupted application is removed and the card issued properly
    with inserted(card) as (_conn, transceive, _c):
        issued = personalize(transceive, store)
        result = cs.CardSession(store).read(transceive, issued.uid, 0x20)
    assert result.ok and result.ref == issued.ref


def test_doorctl_card_virtual_puts_a_card_on_the_reader(pcscd: None, site: Path, tmp_path: Path) -> None:
    state = tmp_path / "card.json"
    _personalized(site, state)
    proc = subprocess.Popen([DOORCTL, "card", "virtual", "--state", str(state), "--slot", str(SLOT)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "virtual desfire card in vpcd slot 1" in proc.stdout.readline()
        conn, _t = pcsc.wait_for_card(READER)
        pcsc.close(conn)
        out = doorctl("read", "--keys", str(site), "--reader", READER)
        assert out.returncode == 0 and "card reference: " in out.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        pcsc.wait_until_absent(READER)
    bad = doorctl("virtual", "--kind", "clone")
    assert bad.returncode == EXIT_USAGE and "--state" in bad.stderr
