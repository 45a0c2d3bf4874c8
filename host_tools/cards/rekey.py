"""Re-keying at the issuing desk: moves a door card to the site's current key version without
reissuing it (same application, same credential, same card reference).

The card says which key versions it holds (GetKeyVersion of key 1 and key 0, before any
authentication). Key 1 (door read) moves first, then key 0 (application master); each
ChangeKey is applied by the card whole or not at all, so a card pulled away midway keeps a
consistent pair of versions and the next run finishes the job. Key 1 is changed by itself when
the card's ChangeKey right allows it (cards issued for door re-keying), else by key 0
(ChangeKey of another key: (new xor old) || version || CRC32(new)).
"""

from __future__ import annotations

from dataclasses import dataclass

from card_reader import card_session as cs
from crypto.ev2 import CardError, Reader
from crypto.keystore import SoftwareKeyStore
from host_tools.cards.pcsc import Transceive
from host_tools.cards.personalize import check_card
from host_tools.errors import EXIT_FAILED, EXIT_USAGE, UserError
from wire import card_profile as profile


@dataclass
class Rekeyed:
    uid: bytes
    before: tuple[int, int]  # (key 0 version, key 1 version) found on the card
    after: int  # the version both keys now have
    ref: bytes


def _fail(message: str) -> UserError:
    return UserError(message, EXIT_FAILED)


def _slot(store: SoftwareKeyStore, kind: str, version: int) -> str:
    slot = store.master_slot(kind, version)
    if slot is None:
        raise UserError(f"the card's {kind} key is version {version}, which this site key file does not "
                        "hold: use the site key file the card was issued with", EXIT_USAGE)
    return slot


def rekey(transceive: Transceive, store: SoftwareKeyStore) -> Rekeyed:
    """Move both application keys of a door card to `store.key_version`."""
    r = Reader(transceive)
    uid = check_card(r)
    aid = profile.DOOR_AID
    target = store.key_version
    step = "select the door application"
    try:
        r.select_application(aid)
        step = "read the card's key versions"
        v1 = r.get_key_version(profile.KEY_DOOR_READ)
        v0 = r.get_key_version(profile.KEY_APP_MASTER)
        new1 = store.derive_card_key(uid, aid, _slot(store, "door_read", target))
        if v1 != target:
            old1 = store.derive_card_key(uid, aid, _slot(store, "door_read", v1))
            step = "change the door read key"
            try:
                r.authenticate(old1, profile.KEY_DOOR_READ)
                r.change_key(profile.KEY_DOOR_READ, new1, None, target)
            except CardError as e:
                if e.reason != "permission_denied":
                    raise
                # issued with ChangeKey right 0: the application master key changes key 1
                r.select_application(aid)
                r.authenticate(store.derive_card_key(uid, aid, _slot(store, "app_master", v0)),
                               profile.KEY_APP_MASTER)
                r.change_key(profile.KEY_DOOR_READ, new1, old1, target)
        if v0 != target:
            step = "change the application master key"
            r.select_application(aid)
            r.authenticate(store.derive_card_key(uid, aid, _slot(store, "app_master", v0)),
                           profile.KEY_APP_MASTER)
            new0 = store.derive_card_key(uid, aid, _slot(store, "app_master", target))
            r.change_key(profile.KEY_APP_MASTER, new0, None, target)
    except CardError as e:
        if e.reason == "no_response":
            raise _fail(f"the card left the reader while trying to {step}: put it back and run rekey "
                        "again (the card keeps a consistent set of keys)") from None
        if e.reason == "no_application":
            raise _fail("this card has no door application: it is not a door card") from None
        if e.reason == "auth_failed":
            raise _fail(f"authentication failed while trying to {step} (card answered 91 AE): the card "
                        "is not a card of this site, or its keys were changed outside this site") from None
        raise _fail(f"could not {step} ({e})") from None
    result = cs.CardSession(store).read(transceive, uid, 0x20)
    if not result.ok or result.key_version != target:
        raise _fail(f"verification failed after re-keying ({result.reason}): keep the card and retry")
    return Rekeyed(uid, (v0, v1), target, result.ref)
