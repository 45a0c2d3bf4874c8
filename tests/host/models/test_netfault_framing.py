"""The fault proxy's MQTT framing: packet boundaries and PUBLISH topics."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from host_tools.netfault import packet_length, publish_topic


def encode_remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: str, payload: bytes) -> bytes:
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + b"\x00\x01" + payload
    return bytes([0x32]) + encode_remaining(len(body)) + body


@given(st.text(min_size=1, max_size=60), st.binary(max_size=20000))
def test_a_publish_is_framed_whole_and_its_topic_read(topic: str, payload: bytes) -> None:
    pkt = publish(topic, payload)
    assert packet_length(pkt + b"\xc0\x00") == len(pkt)  # a PINGREQ follows
    assert packet_length(pkt[:-1]) is None  # incomplete
    assert publish_topic(pkt) == topic


def test_other_packets_have_no_topic() -> None:
    assert publish_topic(bytes([0x40, 0x02, 0x00, 0x01])) is None  # PUBACK
    assert packet_length(bytes([0x40, 0x02, 0x00])) is None
