"""The door card profile (docs/card-profile.md): the DESFire application, its keys, the
credential file and its codec, and how a card reference is derived. Shared by the door's card
session (card_reader/card_session.py), the tools that personalise cards and the platform.
"""

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

DOOR_AID = b"\x01\xd0\xf5"  # 0xF5D001, LSB first as sent to the card
KEY_APP_MASTER = const(0)
KEY_DOOR_READ = const(1)
CRED_FILE = const(1)
CRED_LEN = const(32)
CRED_MAGIC = b"DR"
_CRED_VERSION = const(1)


def encode_credential(site_id, identity):
    if len(identity) != 16:
        raise ValueError("card identity must be 16 bytes")
    out = CRED_MAGIC + bytes([_CRED_VERSION]) + site_id.to_bytes(4, "big") + bytes(identity)
    return out + bytes(CRED_LEN - len(out))


def decode_credential(data):
    """(site_id, identity) or None when the file is not a version-1 credential."""
    if len(data) != CRED_LEN or data[0:2] != CRED_MAGIC or data[2] != _CRED_VERSION:
        return None
    return int.from_bytes(data[3:7], "big"), bytes(data[7:23])


def desfire_ref(keystore, site_id, identity):
    return keystore.card_ref(b"D" + site_id.to_bytes(4, "big") + bytes(identity))


def uid_ref(keystore, uid):
    return keystore.card_ref(b"U" + bytes(uid))


def classic_ref(keystore, block):
    return keystore.card_ref(b"C" + bytes(block))
