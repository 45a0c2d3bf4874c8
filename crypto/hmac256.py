"""HMAC-SHA256 (RFC 2104) over hashlib: MicroPython has no hmac module. Incremental, so a
1.5 MB whitelist file is authenticated in pieces; one-shot for short messages, in C on the
images (`hmacsha256`, board/cmodules/doorcrypto: its hash states on the C stack, only the
32-byte result from the heap, where this class takes two 116-byte SHA-256 objects and pads)."""
import hashlib

try:
    from hmacsha256 import digest as _digest
except ImportError:  # stock MicroPython (files or ROMFS deploy), CPython
    _digest = None


class HMAC:
    def __init__(self, key):
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = bytes(key) + bytes(64 - len(key))
        self._opad = bytes(b ^ 0x5C for b in key)
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))

    def update(self, data):
        self._inner.update(data)

    def digest(self):
        outer = hashlib.sha256(self._opad)
        outer.update(self._inner.digest())
        return outer.digest()


def hmac_sha256(key, msg, more=b""):
    """HMAC-SHA256 of `msg` followed by `more` (no concatenation made)."""
    if _digest is not None:
        return _digest(key, msg, more)
    h = HMAC(key)
    h.update(msg)
    if more:
        h.update(more)
    return h.digest()
