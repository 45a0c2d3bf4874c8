"""The card personalizer: turns a blank DESFire EV2 (or later) card into a door card.

Steps (docs/card-profile.md): GetVersion (DESFire EV2+, 7-byte UID) -> the door application must
not exist -> CreateApplication at PICC level -> AuthenticateEV2First with the application's
default key 0 -> ChangeKey 1 (door read key, diversified; changed by key 1 itself on cards issued
for door re-keying) -> CreateStdDataFile (credential,
MAC mode) -> WriteData -> ChangeKey 0 (application master key, diversified) -> verify by running
the door's own card session on the card.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from card_reader import card_session as cs
from crypto import ev2
from crypto.ev2 import CardError, Reader
from crypto.keystore import SoftwareKeyStore
from host_tools.cards.pcsc import Transceive
from host_tools.errors import EXIT_FAILED, EXIT_USAGE, UserError
from wire import card_profile as profile

APP_KEY_SETTINGS = 0x0B  # master key changeable, free directory list, no free create, config changeable
# ChangeKey access right (bits 7-4): 0 = only the application master key changes keys; 0xE =
# each key changes itself, so a door holding key 1 can move the card to a new key version
# (the site's `door_rekey` policy). Key 0 is always changed by key 0 alone.
CHANGE_KEY_RIGHT_MASTER = 0x00
CHANGE_KEY_RIGHT_SELF = 0xE0


def app_key_settings(door_rekey: bool) -> int:
    return (CHANGE_KEY_RIGHT_SELF if door_rekey else CHANGE_KEY_RIGHT_MASTER) | APP_KEY_SETTINGS
APP_KEYS = 2
# access rights: byte 0 = RW << 4 | Change, byte 1 = Read << 4 | Write
CRED_ACCESS = bytes([(profile.KEY_APP_MASTER << 4) | profile.KEY_APP_MASTER,
                     (profile.KEY_DOOR_READ << 4) | profile.KEY_APP_MASTER])
COMM_MAC = 0x01
DESFIRE_EV2_MAJOR = 0x12


@dataclass
class Issued:
    uid: bytes
    identity: bytes
    ref: bytes


def _fail(message: str) -> UserError:
    return UserError(message, EXIT_FAILED)


def check_card(reader: Reader) -> bytes:
    """The card's UID when it is a DESFire EV2 or later with a fixed 7-byte UID."""
    try:
        version = reader.get_version()
    except CardError as e:
        if e.reason == "no_response":
            raise _fail("the card left the reader: place it on the reader and retry") from None
        raise _fail("this card is not a MIFARE DESFire card: use a blank DESFire EV2 or EV3 card") from None
    if len(version) < 21 or version[0] != 0x04 or version[1] != 0x01:
        raise _fail("this card is not a MIFARE DESFire card: use a blank DESFire EV2 or EV3 card")
    if version[3] < DESFIRE_EV2_MAJOR:
        raise _fail("this DESFire card is older than EV2 (no EV2 secure messaging): use an EV2 or EV3 card")
    uid = version[14:21]
    if uid == bytes(7):
        raise _fail("this card hides its UID (random ID): use a card with a fixed 7-byte UID")
    return bytes(uid)


def _remove_interrupted(r: Reader, aid: bytes) -> None:
    """The door application exists. If its master key is still the default, an earlier
    personalization was interrupted: delete the application so it can be done again.
    Otherwise the card is a finished door card."""
    try:
        r.authenticate(bytes(16), profile.KEY_APP_MASTER)
    except CardError as e:
        if e.reason == "no_response":
            raise _fail("the card left the reader: place it on the reader and retry") from None
        raise _fail("card already personalized (it has the door application): use a blank card, "
                    "or format it with its PICC master key first") from None
    try:
        r.command(ev2.CMD_DELETE_APPLICATION, b"", aid, Reader.MODE_MAC)
    except CardError as e:
        raise _fail(f"could not remove an interrupted personalization ({e}): format the card "
                    "with its PICC master key, then retry") from None


CREATE_STEP = "create the door application"


def step_failure(step: str, e: CardError) -> str:
    """One line saying what the card's answer at `step` means and what to do."""
    if e.reason == "no_response":
        return (f"the card left the reader while trying to {step}: put it back and run "
                "personalize again (an interrupted personalization is redone)")
    if step == CREATE_STEP:
        if e.status in (ev2.ST_AUTHENTICATION_ERROR, ev2.ST_PERMISSION_DENIED):
            # 91 AE / 91 9D on CreateApplication: the PICC key settings (bit 2 clear) demand
            # authentication with the PICC master key before an application can be created.
            return ("the card requires its PICC master key to create applications (card answered "
                    f"91 {e.status:02X}): use a blank card that allows it, or have the card's owner "
                    "format it with that key")
        if e.status == ev2.ST_DUPLICATE_ERROR:
            return "the card already has the door application: run personalize again to redo it"
        if e.status == 0x0E:  # out of EEPROM
            return "the card has no free memory for the door application: use a blank card"
    if e.reason == "auth_failed" and step.startswith("authenticate"):
        return (f"authentication failed while trying to {step} (card answered 91 AE): the new "
                "application's key 0 is not the default all-zero key; use a blank card")
    if e.reason == "integrity_error":
        return (f"the card refused a message while trying to {step} (integrity error 91 1E: a MAC or "
                "the encrypted data did not verify): retry; if it repeats, the reader or card is faulty")
    if e.status is not None:
        return f"could not {step}: the card answered 91 {e.status:02X}"
    return f"could not {step} ({e.reason})"


def personalize(transceive: Transceive, store: SoftwareKeyStore, identity: bytes | None = None) -> Issued:
    r = Reader(transceive)
    uid = check_card(r)
    aid = profile.DOOR_AID
    try:
        r.select_application(aid)
        exists = True
    except CardError as e:
        if e.reason == "no_response":
            raise _fail("the card left the reader: place it on the reader and retry") from None
        if e.reason != "no_application":
            raise _fail(f"the card refused SelectApplication ({e}): "
                        "use a blank DESFire EV2 or EV3 card") from None
        exists = False
    if exists:
        _remove_interrupted(r, aid)
    identity = identity or os.urandom(16)
    version = store.key_version
    read_slot, master_slot = store.master_slot("door_read", version), store.master_slot("app_master", version)
    if read_slot is None or master_slot is None:
        raise UserError(f"the key file has no version {version} keys: it is damaged", EXIT_USAGE)
    read_key = store.derive_card_key(uid, aid, read_slot)
    master_key = store.derive_card_key(uid, aid, master_slot)
    step = CREATE_STEP
    try:
        r.select_application(b"\x00\x00\x00")
        r.plain_command(ev2.CMD_CREATE_APPLICATION,
                        aid + bytes([app_key_settings(store.door_rekey), 0x80 | APP_KEYS]))
        step = "authenticate with the new application's default key"
        r.select_application(aid)
        if store.door_rekey:
            # ChangeKey right 0xE: key 1 changes itself (NewKey || KeyVer; the session ends)
            r.authenticate(bytes(16), profile.KEY_DOOR_READ)
            step = "set the door read key"
            r.change_key(profile.KEY_DOOR_READ, read_key, None, version)
            step = "authenticate with the new application's default key"
            r.select_application(aid)
            r.authenticate(bytes(16), profile.KEY_APP_MASTER)
        else:
            r.authenticate(bytes(16), profile.KEY_APP_MASTER)
            step = "set the door read key"
            r.change_key(profile.KEY_DOOR_READ, read_key, bytes(16), version)
        step = "create the credential file"
        r.command(ev2.CMD_CREATE_STD_DATA_FILE, b"",
                  bytes([profile.CRED_FILE, COMM_MAC]) + CRED_ACCESS + ev2.u24le(profile.CRED_LEN),
                  Reader.MODE_MAC)
        step = "write the credential"
        r.write_data(profile.CRED_FILE, 0, profile.encode_credential(store.site_id, identity))
        step = "set the application master key"
        r.change_key(profile.KEY_APP_MASTER, master_key, None, version)
    except CardError as e:
        raise _fail(step_failure(step, e)) from None
    result = cs.CardSession(store).read(transceive, uid, 0x20)
    expected = profile.desfire_ref(store, store.site_id, identity)
    if not result.ok or result.ref != expected:
        raise _fail(f"verification failed after writing the card ({result.reason}): "
                    "do not hand out this card")
    return Issued(uid, identity, expected)
