"""The door simulator's MQTT reader (host_tools/doorsim.py `_Wire`) cuts a byte stream into
packets however the reads split it: every packet once, in order, with its body whole
(remaining lengths of one to three bytes); a length longer than MQTT allows ends the
connection. What a read's handling sends leaves in one write."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from host_tools.doorsim import MiniMQTT, _Wire
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


class Transport:
    """What a door writes, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def test_a_pieces_state_and_its_puback_leave_in_one_write_the_state_retained() -> None:
    """A whitelist piece at QoS 1 is answered with the door's state (retained, QoS 1, as the
    firmware publishes it) and acknowledged; both go out in one write after the read."""
    from host_tools.cards.kit import SiteKit
    from host_tools.doorsim import SimDoor
    from reference_platform.door_signing import DoorSigner
    from reference_platform.mqtt_frames import Packets, string_field
    from tests.host.unit.test_doorsim_whitelist import _delta
    from wire import common
    from wire.platform import decode_cache_state

    site = SiteKit(per_door=True)
    signer = DoorSigner(site.keys)
    door = SimDoor("city.d1", [], whitelist=1, cache_key=signer.key("cache", "city.d1"))
    client = MiniMQTT("city.d1", door._on_message)
    transport = Transport()
    client._transport = transport  # type: ignore[assignment]
    door._client = client
    wire = _Wire(client)
    stream = b""
    pieces = signer.tags("city.d1").pieces(signer.whitelist_for("city.d1", _delta(site)))
    for mid, piece in enumerate(pieces, 1):
        body = string_field(common.topic("city.d1", "cache")) + bytes([0, mid]) + piece
        stream += bytes([0x32]) + remaining_length(len(body)) + body
    wire.data_received(stream)
    assert door.whitelist == 2
    assert len(transport.writes) == 1
    sent = list(Packets().feed(transport.writes[0]))
    acks = [body for head, body in sent if head >> 4 == 4]
    assert acks == [bytes([0, mid]) for mid in range(1, len(pieces) + 1)]
    states = [(head, body) for head, body in sent if head >> 4 == 3]
    assert len(states) == 1
    head, body = states[0]
    assert head & 0x01 and (head >> 1) & 3 == 1  # retained, QoS 1
    tlen = (body[0] << 8) | body[1]
    assert body[2:2 + tlen].decode() == common.topic("city.d1", "cache_state")
    assert decode_cache_state(body[2 + tlen + 2:])["version"] == 2
