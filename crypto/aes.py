"""AES-128 block cipher shim: cryptolib on MicroPython, `cryptography` on CPython.
Only single-block ECB is exposed; CBC and CMAC are built on it here, so both
interpreters run the same code above the block cipher and count the same blocks."""
try:
    import cryptolib

    _MP = True
except ImportError:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    _MP = False

# AES block operations since start (encrypt + decrypt): the benchmark's counter.
_count = [0]


def blocks():
    return _count[0]


def reset_blocks():
    _count[0] = 0


def _check_key(key):
    if len(key) != 16:
        raise ValueError("AES-128 key must be 16 bytes")


class AES:
    """One AES-128 key; encrypt/decrypt single 16-byte blocks."""

    def __init__(self, key):
        _check_key(key)
        self._key = bytes(key)
        if _MP:
            self._enc = cryptolib.aes(self._key, 1)
            self._dec = None
        else:
            c = Cipher(algorithms.AES(self._key), modes.ECB())
            self._enc = c.encryptor()
            self._dec = c.decryptor()

    def __repr__(self):
        return "<AES key hidden>"

    def encrypt_block(self, block):
        _count[0] += 1
        if _MP:
            return self._enc.encrypt(bytes(block))
        return self._enc.update(bytes(block))

    def decrypt_block(self, block):
        _count[0] += 1
        if _MP:
            if self._dec is None:
                # a cryptolib object does either encryption or decryption, never both
                self._dec = cryptolib.aes(self._key, 1)
            return self._dec.decrypt(bytes(block))
        return self._dec.update(bytes(block))

    def cbc(self, iv, data, encrypt=True):
        """CBC over whole blocks in one call to the block cipher (a Python loop over the blocks
        costs several times more on a Cortex-M3, docs/mcu.md); counts one block operation
        per block, as the loop did."""
        if len(data) % 16:
            raise ValueError("CBC data must be whole blocks")
        if not data:
            return b""
        _count[0] += len(data) // 16
        if _MP:
            c = cryptolib.aes(self._key, 2, bytes(iv))
            return c.encrypt(bytes(data)) if encrypt else c.decrypt(bytes(data))
        c = Cipher(algorithms.AES(self._key), modes.CBC(bytes(iv)))
        x = c.encryptor() if encrypt else c.decryptor()
        return x.update(bytes(data)) + x.finalize()

    def cbc_last(self, data):
        """The last block of `data` (whole blocks, at least one) CBC-encrypted from a zero IV:
        a CBC-MAC chain."""
        if not data:
            raise ValueError("CBC needs whole blocks")
        return self.cbc(bytes(16), data)[-16:]


def xor(a, b):
    n = len(a)
    if n == len(b):
        # As big ints: a few calls into C instead of a loop of n (~4x fewer instructions on a
        # Cortex-M3). The leading 1 and 2 give every number the same length whatever the data
        # (keys and MACs go through here: no size, and so no time, depends on their bytes).
        x = int.from_bytes(b"\x01" + a, "big") ^ int.from_bytes(b"\x02" + b, "big")
        return x.to_bytes(n + 1, "big")[1:]
    out = bytearray(n)
    for i in range(n):
        out[i] = a[i] ^ b[i]
    return bytes(out)


def cbc_encrypt(cipher, iv, data):
    return cipher.cbc(iv, data, True)


def cbc_decrypt(cipher, iv, data):
    return cipher.cbc(iv, data, False)


ZERO_IV = bytes(16)


def pad_m2(data):
    """ISO/IEC 9797-1 padding method 2: 0x80 then zeros to a whole block (always adds)."""
    n = 16 - (len(data) % 16)
    return bytes(data) + b"\x80" + bytes(n - 1)


def unpad_m2(data):
    i = len(data) - 1
    while i >= 0 and data[i] == 0:
        i -= 1
    if i < 0 or data[i] != 0x80 or len(data) - i > 16:
        raise ValueError("bad padding")
    return bytes(data[:i])
