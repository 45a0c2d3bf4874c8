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
# Cipher objects made since start (cryptolib's, or `cryptography`'s under CPython): each one
# a heap allocation and a key schedule on the device (tests hold a card read to a few).
_made = [0]


def blocks():
    return _count[0]


def reset_blocks():
    _count[0] = 0


def objects():
    return _made[0]


ZERO_IV = bytes(16)


def _check_key(key):
    if len(key) != 16:
        raise ValueError("AES-128 key must be 16 bytes")


class AES:
    """One AES-128 key: single blocks, CBC and CBC-MAC chains.

    Its cryptolib objects are made once, each when first needed (an ECB encryptor, an ECB
    decryptor, a CBC encryptor): a cryptolib object is a ~300-byte allocation and a key
    schedule, and a CBC object per call made a dozen of them per card read, on a heap where
    that allocation is the one that fails first. A CBC object cannot be given a new IV, so
    the encryptor is one endless chain: its state is the last block it produced, and a call
    that needs IV `iv` xors `iv ^ state` into its first block (one xor per call, the rest of
    the chain in C)."""

    def __init__(self, key):
        _check_key(key)
        self._key = bytes(key)
        self._enc = self._dec = self._chain = None
        self._state = ZERO_IV  # the chain's last output block

    def __repr__(self):
        return "<AES key hidden>"

    def _ecb(self, data, encrypt):
        """Whole blocks through the ECB encryptor or decryptor (any number in one C call)."""
        if encrypt:
            if self._enc is None:
                self._enc = _new(self._key, False, encrypt)
            return _run(self._enc, data, True)
        if self._dec is None:
            # a cryptolib object does either encryption or decryption, never both
            self._dec = _new(self._key, False, encrypt)
        return _run(self._dec, data, False)

    def encrypt_block(self, block):
        _count[0] += 1
        return self._ecb(bytes(block), True)

    def decrypt_block(self, block):
        _count[0] += 1
        return self._ecb(bytes(block), False)

    def _chained(self, iv, data):
        """CBC encryption of whole blocks from `iv`, on the one chain."""
        if self._chain is None:
            self._chain = _new(self._key, True, True)
        data = bytearray(data)
        if iv is not ZERO_IV:
            xor_in(data, 0, iv, 16)
        if self._state is not ZERO_IV:
            xor_in(data, 0, self._state, 16)
        out = _run(self._chain, data, True)
        self._state = out[len(out) - 16 :]
        return out

    def cbc(self, iv, data, encrypt=True):
        """CBC over whole blocks; counts one block operation per block. Decryption is one ECB
        call and one xor."""
        n = len(data)
        if n % 16:
            raise ValueError("CBC data must be whole blocks")
        if not n:
            return b""
        _count[0] += n // 16
        if encrypt:
            return self._chained(iv, data)
        data = bytes(data)
        out = bytearray(self._ecb(data, False))
        if iv is not ZERO_IV:
            xor_in(out, 0, iv, 16)
        if n > 16:
            xor_in(out, 16, data, n - 16)
        return bytes(out)

    def cbc_last(self, data):
        """The last block of `data` (whole blocks, at least one) CBC-encrypted from a zero IV:
        a CBC-MAC chain."""
        if not data:
            raise ValueError("CBC needs whole blocks")
        return self.cbc(ZERO_IV, data)[-16:]


def _new(key, chain, encrypt):
    """A cryptolib object (ECB, or CBC from a zero IV); under CPython a `cryptography` context
    that keeps its chain across calls as cryptolib's does."""
    _made[0] += 1
    if _MP:
        return cryptolib.aes(key, 2, ZERO_IV) if chain else cryptolib.aes(key, 1)
    c = Cipher(algorithms.AES(key), modes.CBC(ZERO_IV) if chain else modes.ECB())
    return c.encryptor() if encrypt else c.decryptor()


def _run(obj, data, encrypt):
    if _MP:
        return obj.encrypt(data) if encrypt else obj.decrypt(data)
    return obj.update(data)


_XOR_SOURCE = """
@micropython.viper
def xor_at(d, o: int, b, n: int):
    p = ptr8(d)
    y = ptr8(b)
    i = 0
    while i < n:
        p[o + i] ^= y[i]
        i += 1
"""


def _compile_xor():
    """The xor's loop in machine code where the port has a native emitter (~5x fewer
    instructions than the big-int xor on a Cortex-M3: the CBC chain xors once per call,
    docs/mcu.md); None elsewhere (CPython, a port without an emitter, no heap to compile)."""
    import sys

    if sys.implementation.name != "micropython":
        return None
    import gc

    scope = {}
    gc.collect()  # the compiler's leftovers go where the heap is free now (offline_cache/native.py)
    try:
        exec(_XOR_SOURCE, scope)
    except (SyntaxError, NotImplementedError, ValueError, MemoryError):
        return None
    finally:
        gc.collect()
    return scope["xor_at"]


_xor_at = _compile_xor()


def xor_in(buf, off, b, n):
    """buf[off:off + n] ^= b[:n], in place (`buf` a bytearray)."""
    if _xor_at is not None:
        _xor_at(buf, off, b, n)
    else:
        buf[off : off + n] = xor(bytes(buf[off : off + n]), bytes(b[:n]))


def xor(a, b):
    """a ^ b, byte by byte; the same time whatever the bytes (keys and MACs go through here)."""
    n = len(a)
    if n == len(b):
        if _xor_at is not None:
            out = bytearray(a)
            _xor_at(out, 0, b, n)
            return bytes(out)
        # As big ints: a few calls into C instead of a loop of n (~4x fewer instructions on a
        # Cortex-M3). The leading 1 and 2 give every number the same length whatever the data
        # (no size, and so no time, depends on their bytes).
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
