"""A whitelist file's tag and its pieces' tags (docs/protocol.md, "Whitelist updates"), made
and checked on the host with the standard library's HMAC.

They are the same bytes as the door's own code makes (offline_cache's file tag,
wire.common.cache_chunk_tag, both over crypto.hmac256, which MicroPython needs); the
host signs or checks one file for each of a city's 16,900 doors in a fan-out, where the
pure-Python HMAC cost about 20 µs a tag and this one, from a key prepared once, about 2.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from offline_cache import fmt
from wire import common

PIECE_LABEL = b"door-cache-chunk/v1|"


class CacheTags:
    """Tags under one cache key (a door's own, or the site's). The key is held only inside
    the prepared HMAC state."""

    __slots__ = ("_mac",)

    def __init__(self, key: bytes) -> None:
        self._mac = hmac.new(bytes(key), digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "<CacheTags key hidden>"

    def _tag(self, *parts: bytes | bytearray | memoryview) -> bytes:
        mac = self._mac.copy()
        for part in parts:
            mac.update(part)
        return mac.digest()

    def sign_file(self, data: bytes) -> bytes:
        """A signed whitelist file with its tag made again under this key (same content)."""
        body = bytes(data[:-fmt.TAG_SIZE])
        return body + self._tag(body)

    def file_ok(self, data: bytes | bytearray | memoryview) -> bool:
        """Whether the file's last TAG_SIZE bytes are its tag under this key."""
        if len(data) < fmt.TAG_SIZE:
            return False
        cut = len(data) - fmt.TAG_SIZE
        return hmac.compare_digest(self._tag(data[:cut]), bytes(data[cut:]))

    def piece_tag(self, version: int, total: int, offset: int, data: bytes | memoryview) -> bytes:
        return self._tag(PIECE_LABEL + struct.pack(">III", version, total, offset),
                         data)[:common.CACHE_TAG]

    def piece_ok(self, version: int, total: int, offset: int, data: bytes | memoryview,
                 tag: bytes) -> bool:
        return hmac.compare_digest(self.piece_tag(version, total, offset, data), tag)

    def pieces(self, data: bytes, start: int = 0) -> list[bytes]:
        """The file's update messages from byte `start` (protocol.encode_cache_chunk)."""
        version = int(fmt.parse_header(data[:fmt.HDR_SIZE]).version)
        out = []
        for offset in range(start, len(data), common.CACHE_CHUNK):
            piece = data[offset:offset + common.CACHE_CHUNK]
            head = struct.pack(">III", version, len(data), offset)
            out.append(common.CACHE_MAGIC + head + self.piece_tag(version, len(data), offset, piece)
                       + piece)
        return out
