"""The card step of the door flow: from a card in the field to a pseudonymous card
reference, or a reason why not.  It decides nothing about access: the same
result goes to the access decision whatever the whitelist says.

  session = CardSession(keystore)            # crypto.keystore interface
  result = session.read(transceive, uid, sak)               # blocking transceive
  result = await session.read_async(pn532.exchange, uid, sak)  # async transceive
  for apdu in ...: session.steps(uid, sak)   # a generator, for any other loop
  result.ok, result.ref (8 bytes), result.reason, result.code,
  result.profile, result.low_assurance

`transceive(apdu: bytes) -> bytes` sends one ISO 14443-4 APDU to the card and
returns the response (data + status word); it raises any exception when the card
does not answer (the generator form receives None instead).  For the legacy
MIFARE Classic profile it carries raw MIFARE commands (auth 0x60, read 0x30) and
returns the response data (b"" for a good authentication).  `uid` is the
anticollision UID; `sak` the select acknowledge.

The DESFire EV2 profile (docs/card-profile.md):
  1. SelectApplication(door AID), GetKeyVersion(key 1): the card's key version picks the
     door read master (a door accepts one version, or two during a key rotation window;
     another version is refused `key_retired`)
  2. AuthenticateEV2First with key 1, the door read key diversified from the site
     master with card UID || AID || site system identifier (AN10922)
  3. GetCardUID (encrypted) must equal the anticollision UID
  4. ReadData(credential file, 32 bytes) in MAC mode; MAC checked in constant time
  5. credential: magic, version, site id must match; identity = 16 bytes
  6. ref = HMAC-SHA256(card_ref key, "D" || site id || identity)[:8]
  7. a card on an older accepted version, where the site lets doors re-key: ChangeKey(key 1)
     to the current version's key (the card's ChangeKey right lets key 1 change itself);
     the result says so (`rekeyed`); a failed re-key changes nothing in the decision"""
try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

from crypto import ct
from crypto.ev2 import CardError, Reader, drive, drive_async

# The card profile (AID, keys, credential file and codec, card references): wire/card_profile.py,
# shared with the tools that personalise cards and the platform.
from wire.card_profile import (
    CRED_FILE,
    CRED_LEN,
    DOOR_AID,
    KEY_DOOR_READ,
    classic_ref,
    decode_credential,
    desfire_ref,
    uid_ref,
)

# Result codes (`result.code`) and their names: one table, wire/codes.py.
from wire.codes import CARD_AUTH_FAILED as AUTH_FAILED
from wire.codes import CARD_BAD_CREDENTIAL as BAD_CREDENTIAL
from wire.codes import CARD_BAD_MAC as BAD_MAC
from wire.codes import CARD_KEY_RETIRED as KEY_RETIRED
from wire.codes import CARD_LOST
from wire.codes import CARD_NOT_DOOR_CARD as NOT_DOOR_CARD
from wire.codes import CARD_OK as OK
from wire.codes import CARD_PROTOCOL_ERROR as PROTOCOL_ERROR
from wire.codes import CARD_UID_MISMATCH as UID_MISMATCH
from wire.codes import CARD_UNSUPPORTED as UNSUPPORTED_CARD
from wire.codes import CARD_WRONG_SITE as WRONG_SITE
from wire.codes import card_reason

_CARD_ERRORS = {
    "no_response": CARD_LOST,
    "not_desfire": NOT_DOOR_CARD,
    "no_application": NOT_DOOR_CARD,
    "auth_failed": AUTH_FAILED,
    "integrity_error": AUTH_FAILED,
    "bad_mac": BAD_MAC,
    "bad_padding": BAD_MAC,
    "permission_denied": AUTH_FAILED,
}

# SAK (ISO 14443-3 select acknowledge) bits, and the raw MIFARE Classic commands
_SAK_ISO_DEP = const(0x20)  # the card speaks ISO 14443-4
_SAK_CLASSIC_MASK = const(0x18)  # with 0x08 (1K) or 0x18 (4K): MIFARE Classic
_MIFARE_AUTH_A = const(0x60)
_MIFARE_READ = const(0x30)

PROFILE_DESFIRE = "desfire_ev2"
PROFILE_UID = "uid"
PROFILE_CLASSIC = "classic"


class CardResult:
    def __init__(self, code, ref=None, profile=None, low_assurance=False, key_version=None):
        self.code = code
        self.reason = card_reason(code)
        self.ok = code == OK
        self.ref = ref
        self.profile = profile
        self.low_assurance = low_assurance
        self.key_version = key_version  # the card's door read key version (after any re-key)
        self.rekeyed = False

    def __repr__(self):
        return "<CardResult %s %s%s>" % (
            self.reason, self.ref.hex() if self.ref else "-", " low-assurance" if self.low_assurance else "")


def read_slot(keystore, version):
    """The door read slot for a card of `version`, None when the door does not accept it.
    A key store without versions holds version 1 only."""
    f = getattr(keystore, "read_slot", None)
    if f is None:
        return "door_read" if version == 1 else None
    return f(version)


def is_iso_dep(sak):
    return sak is None or bool(sak & _SAK_ISO_DEP)


def is_classic(sak):
    return sak is not None and (sak & _SAK_CLASSIC_MASK) in (0x08, 0x18) and not sak & _SAK_ISO_DEP


class CardSession:
    """Card step of the door flow. Legacy profiles are off unless enabled."""

    def __init__(self, keystore, legacy_uid=False, legacy_classic=False, classic_block=4, rng=None):
        self.keystore = keystore
        self.legacy_uid = legacy_uid
        self.legacy_classic = legacy_classic
        self.classic_block = classic_block
        self._rng = rng

    def read(self, transceive, uid, sak=None):
        """The card step on a blocking transceive; returns a CardResult."""
        return drive(self.steps(uid, sak), transceive)

    async def read_async(self, transceive, uid, sak=None):
        """The card step on an async transceive (`await transceive(apdu)`)."""
        return await drive_async(self.steps(uid, sak), transceive)

    def steps(self, uid, sak=None):
        """Generator: yields C-APDUs (or raw MIFARE commands), receives the answers
        (None when the card did not answer); its return value is the CardResult."""
        uid = bytes(uid)
        if is_iso_dep(sak):
            result = yield from self._desfire(uid)
            if result.code != NOT_DOOR_CARD or not self.legacy_uid:
                return result
            return CardResult(OK, uid_ref(self.keystore, uid), PROFILE_UID, True)
        if is_classic(sak) and self.legacy_classic:
            return (yield from self._classic(uid))
        if self.legacy_uid:
            return CardResult(OK, uid_ref(self.keystore, uid), PROFILE_UID, True)
        return CardResult(UNSUPPORTED_CARD)

    def _desfire(self, uid):
        ks = self.keystore
        r = Reader(None, self._rng)
        try:
            yield from r.g_select_application(DOOR_AID)
            version = yield from r.g_get_key_version(KEY_DOOR_READ)
            slot = read_slot(ks, version)
            if slot is None:
                return CardResult(KEY_RETIRED, None, PROFILE_DESFIRE, False, version)
            key = ks.derive_card_key(uid, DOOR_AID, slot)
            yield from r.g_authenticate(key, KEY_DOOR_READ)
            card_uid = yield from r.g_get_card_uid()
            if not ct.equal(card_uid, uid):
                return CardResult(UID_MISMATCH, None, PROFILE_DESFIRE)
            data = yield from r.g_read_data(CRED_FILE, 0, CRED_LEN)
        except CardError as e:
            return CardResult(_CARD_ERRORS.get(e.reason, PROTOCOL_ERROR), None, PROFILE_DESFIRE)
        cred = decode_credential(data)
        if cred is None:
            return CardResult(BAD_CREDENTIAL, None, PROFILE_DESFIRE)
        if cred[0] != ks.site_id:
            return CardResult(WRONG_SITE, None, PROFILE_DESFIRE)
        result = CardResult(OK, desfire_ref(ks, cred[0], cred[1]), PROFILE_DESFIRE, False, version)
        current = getattr(ks, "key_version", version)
        if version != current and getattr(ks, "door_rekey", False):
            yield from self._rekey(r, uid, current, result)
        return result

    def _rekey(self, r, uid, current, result):
        """Move key 1 to the current version: ChangeKey of the key in use (NewKey || KeyVer,
        CommMode.Full); the card ends the session. The card applies it whole or not at all; if
        the answer is lost the next swipe's GetKeyVersion tells which key the card has."""
        slot = read_slot(self.keystore, current)
        if slot is None:
            return
        try:
            yield from r.g_change_key(KEY_DOOR_READ, self.keystore.derive_card_key(uid, DOOR_AID, slot),
                                      None, current)
        except CardError:
            return  # not allowed on this card (ChangeKey right) or gone: it keeps its key
        result.key_version = current
        result.rekeyed = True

    def _classic(self, uid):
        # Low assurance: Crypto1 is broken and the block can be copied; the reference
        # only says "a card carrying these 16 bytes".
        blk = self.classic_block
        ok = yield bytes([_MIFARE_AUTH_A, blk]) + self.keystore.key("classic_a") + uid[-4:]
        if ok is None:
            return CardResult(CARD_LOST, None, PROFILE_CLASSIC, True)
        data = yield bytes([_MIFARE_READ, blk])
        if data is None:
            return CardResult(CARD_LOST, None, PROFILE_CLASSIC, True)
        if len(data) < 16:
            return CardResult(PROTOCOL_ERROR, None, PROFILE_CLASSIC, True)
        return CardResult(OK, classic_ref(self.keystore, data[:16]), PROFILE_CLASSIC, True)
