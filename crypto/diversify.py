"""AES-128 key diversification as in NXP AN10922 section 2.2.

Diversification input M (1..31 bytes), in this product: card UID (7 bytes)
|| AID (3 bytes, LSB first as sent to the card) || site system identifier.
D = 0x01 || M, padded with 0x80 00.. to exactly 32 bytes when shorter;
the diversified key is the CMAC-style last block (K2 when padded, K1 when not)."""
from crypto.cmac import CMAC

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

_DIV_CONST_AES128 = const(0x01)


def div_input(uid, aid, system_id):
    m = bytes(uid) + bytes(aid) + bytes(system_id)
    if not 1 <= len(m) <= 31:
        raise ValueError("diversification input must be 1..31 bytes")
    return m


def diversify_aes128(master, m, cmac_obj=None):
    """Diversified AES-128 key from `master` and input `m` (AN10922 AES-128)."""
    if not 1 <= len(m) <= 31:
        raise ValueError("diversification input must be 1..31 bytes")
    c = cmac_obj or CMAC(master)
    d = bytes([_DIV_CONST_AES128]) + bytes(m)
    padded = len(d) < 32
    if padded:
        d = d + b"\x80" + bytes(31 - len(d))
    return c.last_block(d, padded)
