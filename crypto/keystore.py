"""Key store of the door controller.

Interface (duck-typed, so a SAM or secure element can stand behind it without
ever releasing a master key):
  site_id            -> int, the site's 32-bit identifier (not secret)
  system_id          -> bytes, the site system identifier used in diversification
  derive_card_key(uid, aid, slot="door_read") -> 16-byte AES key of that card
  card_ref(data)     -> bytes, keyed hash (HMAC-SHA256, truncated) of a card identity
  has(slot)          -> bool
  hmac(slot, msg)    -> HMAC-SHA256 of msg with a slot's key (remote commands)
  key(slot)          -> 16-byte key, only for slots that are not master keys
                        (e.g. "classic_a" for the low-assurance legacy profile)

Slots on a door: door_read (diversification master of the door read key), card_ref
(reference hash key), cache (HMAC-SHA256 key of whitelist updates, >= 16 bytes),
command (HMAC-SHA256 key of remote commands, >= 16 bytes), classic_a (6 bytes, legacy).

Key versions (site key rotation, docs/card-profile.md "Key versions"): the diversification
masters exist per version. Slot `door_read` / `app_master` is version 1, `door_read.N` /
`app_master.N` version N. A key file also says which version is current (new cards and
re-keys get it: `key_version`), which door read versions a door accepts (`accept`),
whether a door moves cards to the current version on their next swipe (`door_rekey`),
and the key file's generation (every rotation step makes a new one).
  key_version, accept, door_rekey, generation -> as above
  read_slot(version)  -> the door read slot of an accepted version, or None
  master_slot(kind, version) -> "door_read.N" / "app_master.N" when present, or None

Per-door keys (docs/threat-model.md): on a site that gives each door its own `command` and
`cache` keys (derived by the platform from a site secret no door holds), the key file says
`"scope": "door"` and names its `device`; the door then verifies only what was signed for
it. `scope` "site" (the default): the site-wide keys of a site made before per-door keys.
  scope, device -> as above

SoftwareKeyStore keeps the keys in a file on flash (JSON of hex strings, written
by `doorctl card keys init` and deployed with the configuration). Its repr
never shows a key, and its errors never carry one."""
import json

from crypto.cmac import CMAC
from crypto.diversify import div_input, diversify_aes128
from crypto.hmac256 import HMAC, hmac_sha256

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x


# Slots holding diversification masters: their keys never leave the store.
_MASTER_SLOTS = const(("app_master", "door_read"))
_REF_SLOT = const("card_ref")
_REF_LEN = const(8)
# HMAC keys: at least 16 bytes, any length above.
_WIDE_SLOTS = const((_REF_SLOT, "cache", "command", "update", "provision", "door_master"))
_SCOPES = const(("site", "door"))


class KeyStoreError(Exception):
    pass


def _unhex(s):
    try:
        return bytes.fromhex(s)
    except Exception:
        raise KeyStoreError("bad key file: a value is not hex") from None


class SoftwareKeyStore:
    """Keys held in RAM, loaded from a key file."""

    def __init__(self, site_id, system_id, keys, key_version=1, accept=None, door_rekey=False,
                 generation=1, scope="site", device=None):
        if scope not in _SCOPES or (scope == "door") != isinstance(device, str):
            raise KeyStoreError("bad key file: scope must be site, or door with its device")
        self.scope = scope
        self.device = device
        self.site_id = int(site_id)
        self.system_id = bytes(system_id)
        self.key_version = int(key_version)
        self.accept = tuple(int(v) for v in accept) if accept else (self.key_version,)
        self.door_rekey = bool(door_rekey)
        self.generation = int(generation)
        self._keys = {}
        self._cmacs = {}
        for slot in keys:
            k = bytes(keys[slot])
            if slot in _WIDE_SLOTS:
                if len(k) < 16:
                    raise KeyStoreError("bad key file: %s must be at least 16 bytes" % slot)
            elif slot.startswith("classic_"):
                if len(k) != 6:
                    raise KeyStoreError("bad key file: %s must be 6 bytes" % slot)
            elif len(k) != 16:
                raise KeyStoreError("bad key file: %s must be 16 bytes" % slot)
            self._keys[slot] = k

    @classmethod
    def from_dict(cls, d):
        try:
            keys = {}
            for slot in d["keys"]:
                keys[slot] = _unhex(d["keys"][slot])
            return cls(d["site_id"], _unhex(d["system_id"]), keys, d.get("key_version", 1),
                       d.get("accept"), d.get("door_rekey", False), d.get("generation", 1),
                       d.get("scope", "site"), d.get("device"))
        except KeyError as e:
            raise KeyStoreError("bad key file: missing %s" % e.args[0]) from None
        except (TypeError, ValueError):
            raise KeyStoreError("bad key file: key versions are not numbers") from None

    @classmethod
    def load(cls, path):
        try:
            with open(path) as f:
                d = json.load(f)
        except OSError:
            raise KeyStoreError("key file %s not found" % path) from None
        except ValueError:
            raise KeyStoreError("key file %s is not valid JSON" % path) from None
        return cls.from_dict(d)

    def __repr__(self):
        return "<SoftwareKeyStore site=%d scope=%s version=%d accept=%s slots=%s keys hidden>" % (
            self.site_id, self.scope, self.key_version, list(self.accept), sorted(self._keys))

    __str__ = __repr__

    def has(self, slot):
        return slot in self._keys

    def _get(self, slot):
        if slot not in self._keys:
            raise KeyStoreError("no key in slot %s" % slot)
        return self._keys[slot]

    def master_slot(self, kind, version):
        """The slot of `kind` ("door_read", "app_master") for key version `version`, if held."""
        slot = kind if version == 1 else "%s.%d" % (kind, version)
        return slot if slot in self._keys else None

    def read_slot(self, version):
        """The door read slot for a card of key version `version`, None when not accepted."""
        if version not in self.accept:
            return None
        return self.master_slot("door_read", version)

    def replace(self, other):
        """Take over another store's keys and versions (a key update applied in place: every
        task holding this store sees the new keys at once)."""
        self.site_id, self.system_id = other.site_id, other.system_id
        self.key_version, self.accept = other.key_version, other.accept
        self.door_rekey, self.generation = other.door_rekey, other.generation
        self.scope, self.device = other.scope, other.device
        self._keys, self._cmacs = other._keys, {}

    def key(self, slot):
        if slot in ("update", "provision", "door_master"):
            raise KeyStoreError("slot %s is not exportable" % slot)
        if slot.split(".")[0] in _MASTER_SLOTS or slot == _REF_SLOT:
            raise KeyStoreError("slot %s is not exportable" % slot)
        return self._get(slot)

    def derive_card_key(self, uid, aid, slot="door_read"):
        c = self._cmacs.get(slot)
        if c is None:
            c = CMAC(self._get(slot))
            self._cmacs[slot] = c
        return diversify_aes128(None, div_input(uid, aid, self.system_id), c)

    def card_ref(self, data):
        return hmac_sha256(self._get(_REF_SLOT), data)[:_REF_LEN]

    def hmac(self, slot, msg):
        """HMAC-SHA256 of `msg` with the key in `slot` (e.g. "command"), without exporting it."""
        return hmac_sha256(self._get(slot), msg)

    def hmac_parts(self, slot, parts):
        """HMAC-SHA256 of the concatenation of `parts` (an iterable of bytes), fed one by one."""
        h = HMAC(self._get(slot))
        for part in parts:
            h.update(part)
        return h.digest()
