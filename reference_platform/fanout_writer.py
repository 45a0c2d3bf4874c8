"""A fan-out's messages published on an MQTT connection of their own, written in bulk.

A lost card goes to every door that holds it: at 16,900 doors, one platform process spent
most of its fan-out CPU in paho's per-message work (a message object with its own condition
variable per publish, one socket write per packet, a callback per PUBACK), all on the one
network thread that also takes the doors' answers. Here the fan-out's QoS 1 PUBLISH packets
are encoded back to back into one buffer and written with as few `send` calls as the socket
takes, on a plain MQTT 3.1.1 connection opened for the fan-out (the platform's own login, so
the broker's access rules are the same), while paho's thread goes on taking the answers.

The delivery guarantee is paho's: QoS 1, each message acknowledged by the broker. A message the
broker has not acknowledged when the connection fails (or the deadline passes) is handed
back to the caller, which publishes it again through paho (the door takes a piece twice as
paho's own resend after a reconnect would give it). Plain TCP only: a platform on TLS
publishes through paho.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
import uuid
from collections.abc import Sequence

from reference_platform.mqtt_frames import MalformedPacket, Packets, remaining_length, string_field

CONNECT, CONNACK, PUBLISH, PUBACK, DISCONNECT = 1, 2, 3, 4, 14
WINDOW = 20_000  # messages sent and not yet acknowledged by the broker (packet ids: 65,535)
WRITE_CHUNK = 256 * 1024  # bytes encoded ahead of the socket at most


def publish_packet(topic: bytes, payload: bytes, mid: int) -> bytes:
    """One QoS 1 PUBLISH (MQTT 3.1.1, not retained)."""
    body_len = 2 + len(topic) + 2 + len(payload)
    return b"".join((b"\x32", remaining_length(body_len), string_field(topic),
                     struct.pack(">H", mid), payload))


def connect_packet(client_id: str, login: tuple[str, str | None] | None, keepalive: int) -> bytes:
    flags = 0x02  # clean session: nothing of this connection outlives the fan-out
    payload = string_field(client_id.encode())
    if login is not None:
        user, password = login
        flags |= 0x80
        payload += string_field(user.encode())
        if password is not None:
            flags |= 0x40
            payload += string_field(password.encode())
    body = string_field(b"MQTT") + bytes([4, flags]) + struct.pack(">H", keepalive) + payload
    return bytes([CONNECT << 4]) + remaining_length(len(body)) + body


def publish_all(host: str, port: int, messages: Sequence[tuple[str, bytes]], *,
                login: tuple[str, str | None] | None = None, client_id: str | None = None,
                timeout: float = 30.0) -> list[int]:
    """Publish every (topic, payload) at QoS 1 on a connection of its own; returns the
    indexes of the messages the broker did not acknowledge (none when all went through:
    connection refused, dropped or too slow leaves the rest to the caller), in order."""
    deadline = time.monotonic() + timeout
    cid = client_id or f"fanout-{uuid.uuid4().hex[:8]}"
    try:
        sock = socket.create_connection((host, port), timeout=min(10.0, timeout))
    except OSError:
        return list(range(len(messages)))
    unacked: dict[int, int] = {}  # packet id -> message index
    sent = 0
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(cid, login, keepalive=max(10, int(timeout) + 10)))
        reader = Packets()
        connack: bytes | None = None
        while connack is None:
            data = sock.recv(4096)
            if not data:
                return list(range(len(messages)))  # refused: closed without a CONNACK
            for head, body in reader.feed(data):
                ptype = head >> 4
                if ptype == CONNACK:
                    connack = body
        if len(connack) != 2 or connack[1] != 0:
            return list(range(len(messages)))  # refused (not authorised, say)
        sock.setblocking(False)
        out = bytearray()
        mid = 0
        topics: dict[str, bytes] = {}
        while sent < len(messages) or unacked or out:
            while sent < len(messages) and len(unacked) < WINDOW and len(out) < WRITE_CHUNK:
                topic, payload = messages[sent]
                t = topics.get(topic)
                if t is None:
                    t = topics[topic] = topic.encode()
                mid = mid % 0xFFFF + 1
                while mid in unacked:  # a long-unanswered id is still in use
                    mid = mid % 0xFFFF + 1
                out += publish_packet(t, payload, mid)
                unacked[mid] = sent
                sent += 1
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, writable, _ = select.select([sock], [sock] if out else [], [], left)
            if writable:
                try:
                    n = sock.send(out)
                except BlockingIOError:
                    n = 0
                del out[:n]
            if readable:
                data = sock.recv(65536)
                if not data:
                    break  # the broker closed the connection
                for head, body in reader.feed(data):
                    ptype = head >> 4
                    if ptype == PUBACK and len(body) >= 2:
                        unacked.pop((body[0] << 8) | body[1], None)
        if not unacked and sent == len(messages):
            with contextlib.suppress(OSError):
                sock.setblocking(True)
                sock.sendall(bytes([DISCONNECT << 4, 0]))
    except (OSError, MalformedPacket):  # refused, dropped, or not MQTT: the caller resends
        pass
    finally:
        sock.close()
    return sorted(unacked.values()) + list(range(sent, len(messages)))
