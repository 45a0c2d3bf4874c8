"""MQTT 3.1.1 framing shared by the platform's bulk fan-out connection (fanout_writer.py) and
the door simulator (host_tools/doorsim.py): the remaining-length field, length-prefixed
strings, and received bytes cut into packets. (The door's own client is firmware/mqtt.py.)"""

from __future__ import annotations

import struct


class MalformedPacket(ValueError):
    """A remaining-length field longer than MQTT's four bytes."""


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string_field(s: str | bytes) -> bytes:
    """A length-prefixed string (topic, client id, login)."""
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


class Packets:
    """Cuts received bytes into MQTT packets: (first byte, body), every whole one a read brings
    in one call."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.buf
        buf += data
        out: list[tuple[int, bytes]] = []
        while len(buf) >= 2:
            n, shift, i = 0, 0, 1
            while True:  # the remaining length: up to four bytes, 7 bits each
                if i >= len(buf):
                    return out
                b = buf[i]
                n |= (b & 0x7F) << shift
                i += 1
                if not b & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise MalformedPacket("a remaining length over four bytes")
            if len(buf) < i + n:
                return out
            out.append((buf[0], bytes(buf[i:i + n])))
            del buf[:i + n]
        return out
