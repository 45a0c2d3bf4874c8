# A publish that finds no heap leaves the client in step: before a byte is written nothing is
# taken as in flight (an id left waiting for a PUBACK that cannot come counts against the
# window of 8 until a reconnect: eight of them stop every publish), and once a packet is part
# written the connection ends, so the broker never reads a packet behind a partial one.
import asyncio

import firmware.mqtt as mqtt
from firmware.mqtt import MQTTClient, MQTTError


class _Writer:
    def __init__(self, starve_at=None):
        self.out = []
        self.starve_at = starve_at  # the write (counted from 1) that finds no heap
        self.closed = False

    def write(self, buf):
        if len(self.out) + 1 == self.starve_at:
            raise MemoryError("memory allocation failed, allocating 64 bytes")
        self.out.append(bytes(buf))

    async def drain(self):
        pass

    def close(self):
        self.closed = True

    async def wait_closed(self):
        pass


def _client(writer):
    c = MQTTClient("door", "broker")
    c._writer = writer
    c.connected = True
    return c


def test_no_heap_before_the_first_byte_leaves_no_id_in_flight():
    c = _client(_Writer())
    real = mqtt._varint

    def starved(n):
        raise MemoryError("memory allocation failed, allocating 16 bytes")

    mqtt._varint = starved
    try:
        try:
            asyncio.run(c.publish("door/v1/d/status", b"{}", 1))
        except MemoryError:
            pass
        else:
            raise AssertionError("the publish went through")
    finally:
        mqtt._varint = real
    assert c.inflight() == 0 and c.connected and c._writer.out == []
    asyncio.run(c.publish("door/v1/d/status", b"{}", 1))  # the next one goes out
    assert c.inflight() == 1 and len(c._writer.out) == 3


def test_no_heap_inside_a_packet_ends_the_connection():
    w = _Writer(starve_at=3)  # the fixed header and the topic went, the payload did not
    c = _client(w)
    try:
        asyncio.run(c.publish("door/v1/d/status", memoryview(b'{"v": 1}'), 1))
    except MQTTError:
        pass
    else:
        raise AssertionError("a part-written packet was left on the connection")
    assert not c.connected and w.closed and c._writer is None
