"""AES-CMAC (RFC 4493 / NIST SP 800-38B) over crypto.aes."""
from crypto.aes import AES, xor


def _dbl(block):
    """Doubling in GF(2^128) (RFC 4493 subkeys), on a big int: a loop over 16 bytes costs ~8x
    more on a Cortex-M3 (docs/mcu.md). The leading 1 keeps the number's length fixed."""
    x = (int.from_bytes(b"\x01" + bytes(block), "big") << 1) ^ (0x87 if block[0] & 0x80 else 0)
    return x.to_bytes(17, "big")[1:]


class CMAC:
    """AES-CMAC with one key; subkeys are computed once (one AES block)."""

    def __init__(self, key):
        self._aes = AES(key)
        zero_enc = self._aes.encrypt_block(bytes(16))
        self.k1 = _dbl(zero_enc)
        self.k2 = _dbl(self.k1)

    def __repr__(self):
        return "<CMAC key hidden>"

    def last_block(self, data, padded):
        """The CBC-MAC of whole `data` blocks, last block xored with K2 if `padded` else K1."""
        n = len(data)
        last = xor(data[n - 16 :], self.k2 if padded else self.k1)
        return self._aes.cbc_last(bytes(data[: n - 16]) + last)

    def mac(self, data):
        n = len(data)
        if n and n % 16 == 0:
            return self.last_block(data, False)
        pad = 16 - (n % 16)
        return self.last_block(bytes(data) + b"\x80" + bytes(pad - 1), True)


def cmac(key, data):
    return CMAC(key).mac(data)


def truncate(mac16):
    """DESFire EV2 MACt: the even-numbered bytes (1, 3, ..., 15 counting from 0)."""
    return bytes(mac16[i] for i in range(1, 16, 2))
