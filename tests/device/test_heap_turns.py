# mpy-heapsize: 256K
# Who waits for whom in the door's heap (the 64 KiB goal, docs/architecture.md): a whitelist
# piece in its handler and a card session hold the uplink's next events batch back; a piece
# waits for a card session's end; a reader read with a timeout is polled, not a task per read.
import asyncio
import gc

from board import interface
from firmware import gcpace
from firmware.mqtt import MQTTClient
from tests.device.test_mqtt_publish_memory import _Writer


class _Port:
    """A UART read without waiting: nothing for the first `empty` polls, then `data`."""

    def __init__(self, data, empty):
        self.data, self.empty, self.reads = data, empty, 0

    def any(self):
        self.reads += 1
        return 0 if self.reads <= self.empty else len(self.data)

    def read(self, n):
        assert self.data, "read with nothing to read: a C stream allocates its buffer first"
        out, self.data = self.data[:n], self.data[n:]
        return out


def test_a_polled_read_returns_what_comes_and_nothing_after_its_timeout():
    async def run():
        import time

        got = await interface.read_polled(_Port(b"\x00\xff", 5), 8, 1000)
        port = _Port(b"", 10 ** 6)
        t0 = time.ticks_ms()
        none = await interface.read_polled(port, 8, 30)
        waited = time.ticks_diff(time.ticks_ms(), t0)
        now = await interface.read_polled(_Port(b"ab", 0), 8, 0)  # what is there, no wait
        return got, none, waited >= 30, port.reads > 1, now

    assert asyncio.run(run()) == (b"\x00\xff", b"", True, True, b"ab")


def test_a_polled_read_that_times_out_allocates_less_than_a_task_and_its_timeout():
    async def run():
        port = _Port(b"", 10 ** 6)
        await interface.read_polled(port, 8, 5)  # the code paths once
        gc.collect()
        gc.disable()
        try:
            before = gc.mem_alloc()
            await interface.read_polled(port, 8, 20)
            return gc.mem_alloc() - before
        finally:
            gc.enable()

    # asyncio.wait_for_ms around a read: 512 bytes on the 32-bit image, 1 KiB on 64 bits
    assert asyncio.run(run()) <= 256


class _Reader:
    def __init__(self, data):
        self.data = data

    async def readinto(self, mv):
        n = min(len(mv), len(self.data))
        mv[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


def _client(handler):
    c = MQTTClient("door", "broker", on_message=handler, rx_buf=bytearray(64))
    c._reader, c._writer, c.connected = _Reader(b"x" * 200), _Writer(), True
    return c


def test_a_message_in_its_handler_is_said_until_the_handler_ends_however_it_ends():
    seen = []
    now = [None]  # the client under test

    async def slow(topic, payload, retained):
        seen.append(now[0].delivering)
        await asyncio.sleep_ms(5)

    def fails(topic, payload, retained):
        seen.append(now[0].delivering)
        raise ValueError("bad")

    async def forever(topic, payload, retained):
        seen.append(now[0].delivering)
        await asyncio.sleep_ms(60_000)

    async def run():
        out = []
        for handler in (slow, fails):
            c = now[0] = _client(handler)
            await c._deliver("t", 4, False)
            out.append(c.delivering)
        c = now[0] = _client(forever)
        task = asyncio.create_task(c._deliver("t", 4, False))
        await asyncio.sleep_ms(5)
        out.append(c.delivering)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        out.append(c.delivering)
        return out

    assert asyncio.run(run()) == [False, False, True, False]
    assert seen == [True, True, True]


def _uplink():
    from board.vdev.flashsim import FlashSim
    from firmware.journal import Journal
    from firmware.uplink import Uplink

    j = Journal(FlashSim(path=None, block_size=1024, block_count=8))
    for i in range(5):
        j.append(1, 1, 3, 1767225600 + i, 0, 0)
    return Uplink(j, "site.b1.d1", 3, "0", {"host": "127.0.0.1"})


class _Client:
    connected = True

    def __init__(self):
        self.delivering = True
        self.sent_at = []
        self.t0 = None

    async def publish(self, topic, payload, qos=0, retain=False):
        import time

        if topic.endswith("/events"):
            self.sent_at.append(time.ticks_diff(time.ticks_ms(), self.t0))
            self.connected = False


def _held_for(what):
    """ms from the start of the uplink's send loop to its first batch, `what` lasting 60 ms."""
    import time

    up = _uplink()
    up.trusted_time = True  # no presence asking for a time meanwhile
    client = _Client()

    async def end_after(ms):
        await asyncio.sleep_ms(ms)
        if what == "piece":
            client.delivering = False
        else:
            gcpace.card_session(False)

    async def run():
        if what != "piece":
            client.delivering = False
            gcpace.card_session(True)
        client.t0 = time.ticks_ms()
        asyncio.create_task(end_after(60))
        await up._send_loop(client)

    asyncio.run(run())
    return client.sent_at


def test_the_next_events_batch_waits_for_a_whitelist_piece_in_its_handler():
    sent = _held_for("piece")
    assert len(sent) == 1 and 60 <= sent[0] < 150, sent  # then at once, not after a 200 ms nap


def test_the_next_events_batch_waits_for_a_card_session():
    sent = _held_for("card")
    assert len(sent) == 1 and 60 <= sent[0] < 150, sent
    assert not gcpace.card_first()


def test_a_whitelist_piece_waits_for_the_card_session_under_way():
    from firmware.cache_sync import CacheSync

    order = []

    class _Sync(CacheSync):
        def __init__(self):
            self._rejects = 0

        def chunk(self, payload):
            order.append("piece")
            return False

    async def session():
        gcpace.card_session(True)
        await asyncio.sleep_ms(40)
        order.append("card")
        gcpace.card_session(False)

    async def run():
        asyncio.create_task(session())
        await asyncio.sleep_ms(0)
        await _Sync().on_message(b"")

    asyncio.run(run())
    assert order == ["card", "piece"]
