"""AES-128 block cipher shim: the image's `aes128` C module, else cryptolib on MicroPython,
else `cryptography` on CPython. Single blocks and CBC are exposed; CMAC is built on them
here, so every interpreter runs the same code above the block cipher and counts the same
blocks.

`aes128` (board/cmodules/doorcrypto, built into the unix32, mcu and ESP32 images) keeps a key's
schedule on the C stack for one call: an `AES` then holds its 16-byte key and nothing else,
where cryptolib made a 304-byte heap object per key, per direction and per CBC chain (about
fifteen in an EV2 card read: the requests a fragmented heap failed first). Stock MicroPython
(files or ROMFS deploy) has cryptolib only."""
try:
    from aes128 import block as _block, cbc as _cbc

    _MP = True
except ImportError:
    _cbc = _block = None
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
        if _cbc is not None:
            self._enc = self._dec = None
        elif _MP:
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
        if _block is not None:
            return _block(self._key, block, True)  # refuses anything but 16 bytes itself
        # One block on every interpreter: cryptolib and `cryptography` would take 32 bytes as
        # two (ECB), where a chain would be wrong.
        if len(block) != 16:
            raise ValueError("an AES block is 16 bytes")
        if _MP:
            return self._enc.encrypt(bytes(block))
        return self._enc.update(bytes(block))

    def decrypt_block(self, block):
        _count[0] += 1
        if _block is not None:
            return _block(self._key, block, False)
        if len(block) != 16:
            raise ValueError("an AES block is 16 bytes")
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
        if _cbc is not None:
            return _cbc(self._key, iv, data, encrypt)
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
