# mpy-heapsize: 256K
# A connection that ends still ends, whatever it ends in. The read loop meeting an exhausted
# heap says the connection is over and cancels the keepalive without allocating a byte (a
# 68 KiB trial of the image's workload found close()'s coroutine failing there: `connected`
# stayed true over a socket nobody read, and the door answered the platform no more). And the
# keepalive ends a connection to a broker that reads and says nothing more, whatever waits in
# drain() for the socket (a publish: told MQTTError, where cancelling the reader took its wait
# out of MicroPython's I/O queue and the uplink waited forever; or a PINGREQ, which the
# keepalive used to send itself and then wait on, checking nothing more).
import asyncio

import micropython

from firmware.mqtt import MQTTClient, MQTTError
from tests.device.test_mqtt_publish_memory import _Writer  # a stream that keeps what it is given


class _StarvedReader:
    """The next read finds the heap exhausted (locked here: any allocation fails)."""

    async def readexactly(self, n):
        micropython.heap_lock()
        raise OSError(104)  # cannot even be made: the loop meets a MemoryError


class _UnlockingEvent(asyncio.Event):
    """The connection's `closed` event: the heap stays locked until it is set, the last step
    of ending a connection."""

    def set(self):
        micropython.heap_unlock()
        super().set()


async def _ends_with_no_heap():
    c = MQTTClient("door", "broker", keepalive=30)
    w = _Writer()
    c._reader, c._writer, c.connected = _StarvedReader(), w, True
    c._closed = _UnlockingEvent()
    c._inflight[1] = True

    async def keepalive():
        await asyncio.sleep_ms(60_000)

    ping = asyncio.create_task(keepalive())
    reader = asyncio.create_task(c._read_loop())
    c._tasks = [reader, ping]
    try:
        await asyncio.wait_for_ms(reader, 1000)
    except BaseException as e:  # noqa: BLE001 - the loop must end by itself, not raise
        micropython.heap_unlock()
        return "raised %s" % type(e).__name__, c.connected
    await asyncio.sleep_ms(0)
    return "ended", c.connected, c.last_error, c.inflight(), ping.done(), w.closed


def test_a_read_loop_that_ends_with_no_heap_says_the_connection_is_over():
    # not connected, window empty, keepalive cancelled, socket closed: all with no heap
    assert asyncio.run(_ends_with_no_heap()) == ("ended", False, "MemoryError", 0, True, True)


def _listener():
    """A broker's socket that takes a connection and never reads from it."""
    import os
    import socket

    for _ in range(50):
        port = 20000 + int.from_bytes(os.urandom(2), "big") % 20000
        s = socket.socket()
        try:
            s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
            s.listen(1)
            return s, port
        except OSError:
            s.close()
    raise OSError("no free port")


async def _silent_broker():
    """A connection to a broker that takes it and then reads and says nothing, its socket
    filled by a publisher (8 KiB messages) that then waits in drain()."""
    import socket

    from firmware.mqtt import ticks_ms

    srv, port = _listener()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    silent, _ = srv.accept()
    w.s.setsockopt(socket.SOL_SOCKET, 7, 4096)  # SO_SNDBUF: fills sooner
    c = MQTTClient("door", "broker", keepalive=1)
    c._reader, c._writer, c.connected = r, w, True
    sent = [0]

    async def publisher():
        try:
            for _ in range(2000):  # 16 MB: far more than the socket buffers take
                await c.publish("door/v1/d/events", bytes(8192), 0)
                sent[0] += 1
        except MQTTError:
            return "told"
        return "sent everything"

    pub = asyncio.create_task(publisher())
    last = -1
    while sent[0] != last:  # until no publish goes out in 200 ms: it waits in drain()
        last = sent[0]
        await asyncio.sleep_ms(200)
    c._last_rx = ticks_ms()  # the broker's last word: now
    c._tasks = [asyncio.create_task(c._read_loop()), asyncio.create_task(c._ping_loop())]
    for _ in range(40):  # 4 s: the keepalive ends it after 1.5
        await asyncio.sleep_ms(100)
        if not c.connected:
            break
    try:
        told = await asyncio.wait_for_ms(pub, 1000)
    except asyncio.TimeoutError:
        told = "still waiting"
    closed = w.s.fileno() < 0
    silent.close()
    srv.close()
    return c.connected, told, closed


def test_the_keepalive_ends_a_silent_connection_a_publish_waits_on_and_tells_it():
    assert asyncio.run(_silent_broker()) == (False, "told", True)

