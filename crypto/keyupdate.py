"""A door key file sealed for one door, for delivery over MQTT inside a signed `keys` command
(docs/card-profile.md, "Key versions and rotation"). Encrypt-then-MAC under that door's own
update key (slot `update`: HMAC-SHA256(site `provision` secret, "U" || device id), made at
commissioning; the site secret never reaches a door). The broker sees only ciphertext, and a
thief holding one door's keys can neither read another door's update nor forge one.

  enc key = HMAC(update, "enc")[:16]      AES-128-CBC, random IV, ISO 9797-1 M2 padding
  tag     = HMAC(update, "mac" || "K" || device id || 00 || generation (4, BE) || IV || C)

`mac(msg)` is the key store's HMAC with the update key (the door never exports that key);
the host passes the same function over the derived key."""
from crypto import ct
from crypto.aes import AES, cbc_decrypt, cbc_encrypt, pad_m2, unpad_m2


class SealError(Exception):
    """`reason`: bad_field (malformed), bad_mac (not for this door, or altered)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _tag_input(device_id, generation, iv, c):
    return b"mac" + b"K" + device_id.encode() + b"\x00" + generation.to_bytes(4, "big") + iv + c


def seal(mac, device_id, generation, plain, iv):
    """The `keys` command arguments carrying `plain` (the door key file's JSON bytes)."""
    c = cbc_encrypt(AES(mac(b"enc")[:16]), iv, pad_m2(plain))
    tag = mac(_tag_input(device_id, generation, iv, c))
    return {"g": generation, "iv": iv.hex(), "c": c.hex(), "t": tag.hex()}


def _unhex(s, n=None):
    try:
        b = bytes.fromhex(s)
    except (TypeError, ValueError):
        raise SealError("bad_field") from None
    if n is not None and len(b) != n:
        raise SealError("bad_field")
    return b


def open_sealed(mac, device_id, args):
    """(generation, plain) of a sealed key file for `device_id`; SealError when it is not."""
    if not isinstance(args, dict):
        raise SealError("bad_field")
    g = args.get("g")
    if isinstance(g, bool) or not isinstance(g, int) or not 0 < g < 2 ** 32:
        raise SealError("bad_field")
    iv = _unhex(args.get("iv"), 16)
    c = _unhex(args.get("c"))
    tag = _unhex(args.get("t"), 32)
    if not c or len(c) % 16:
        raise SealError("bad_field")
    if not ct.equal(mac(_tag_input(device_id, g, iv, c)), tag):
        raise SealError("bad_mac")
    try:
        return g, unpad_m2(cbc_decrypt(AES(mac(b"enc")[:16]), iv, c))
    except ValueError:
        raise SealError("bad_field") from None
