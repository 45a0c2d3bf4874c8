"""The door simulator's MQTT reader (host_tools/doorsim.py `_Wire`) cuts a byte stream into
packets however the reads split it: every packet once, in order, with its body whole
(remaining lengths of one to three bytes); a length longer than MQTT allows ends the
connection."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from host_tools.doorsim import _Wire
from reference_platform.mqtt_frames import remaining_length


class Client:
    def __init__(self) -> None:
        self.packets: list[tuple[int, bytes]] = []
        self.closed = 0

    def _packet(self, head: int, body: bytes) -> None:
        self.packets.append((head, body))

    def _close(self) -> None:
        self.closed += 1


big = st.builds(lambda n, b: bytes([b]) * n, st.integers(min_value=16_384, max_value=16_500),
                st.integers(min_value=0, max_value=255))  # a three-byte remaining length
packets = st.lists(st.tuples(st.integers(min_value=0x10, max_value=0xFF),
                             st.one_of(st.binary(max_size=200), big)), max_size=12)


@given(packets, st.lists(st.integers(min_value=1, max_value=5000), max_size=40))
def test_packets_come_out_whole_however_the_reads_split_them(
        sent: list[tuple[int, bytes]], cuts: list[int]) -> None:
    stream = b"".join(bytes([head]) + remaining_length(len(body)) + body for head, body in sent)
    client = Client()
    wire = _Wire(client)  # type: ignore[arg-type]
    at = 0
    for cut in cuts:
        wire.data_received(stream[at:at + cut])
        at += cut
    wire.data_received(stream[at:])
    assert client.packets == sent and client.closed == 0 and not wire.packets.buf


def test_a_remaining_length_past_four_bytes_ends_the_connection() -> None:
    client: Any = Client()
    wire = _Wire(client)
    wire.data_received(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))
    assert client.closed == 1 and client.packets == []
