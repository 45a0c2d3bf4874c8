# A connection that ends while the heap is exhausted still ends: the read loop meets the
# error, says the connection is over and cancels the keepalive without allocating a byte, so
# the uplink (which loops while `connected`) sees it and connects again. Found in a 68 KiB
# trial of the image's workload: making close()'s coroutine failed there, `connected` stayed
# true over a socket nobody read, and the door answered the platform no more.
import asyncio

import micropython

from firmware.mqtt import MQTTClient


class _Writer:
    def __init__(self):
        self.closed = False

    def write(self, buf):
        pass

    async def drain(self):
        pass

    def close(self):
        self.closed = True

    async def wait_closed(self):
        pass


class _StarvedReader:
    """The next read finds the heap exhausted (locked here: any allocation fails)."""

    async def readexactly(self, n):
        micropython.heap_lock()
        raise OSError(104)  # cannot even be made: the loop meets a MemoryError


async def _ends_with_no_heap():
    c = MQTTClient("door", "broker", keepalive=30)
    w = _Writer()
    c._reader, c._writer, c.connected = _StarvedReader(), w, True
    c._inflight[1] = True
    locked_through = []
    real_end = c._end

    def end_then_unlock():  # the heap stays locked through the whole of the loop's ending
        try:
            real_end()
            locked_through.append(True)
        finally:
            micropython.heap_unlock()
            c._end = real_end  # once: the lock is taken once

    c._end = end_then_unlock

    async def keepalive():
        await asyncio.sleep_ms(60_000)

    ping = asyncio.create_task(keepalive())
    reader = asyncio.create_task(c._read_loop())
    c._tasks = [reader, ping]
    await reader
    assert locked_through == [True]
    assert not c.connected and c.last_error == "MemoryError"
    assert c.inflight() == 0 and c._tasks == ()
    await asyncio.sleep_ms(0)
    assert ping.done()  # cancelled
    await asyncio.wait_for_ms(c.wait_closed(), 100)
    assert not w.closed  # closing the socket takes a coroutine: the owner's close() does it
    await c.close()
    assert w.closed


def test_a_read_loop_that_ends_with_no_heap_says_the_connection_is_over():
    asyncio.run(_ends_with_no_heap())


async def _publish_waits_then_fails():
    c = MQTTClient("door", "broker", max_inflight=1)
    c._writer, c.connected = _Writer(), True
    c._inflight[1] = True  # the window is full: the next publish waits for a PUBACK
    c._tasks = ()
    waiting = asyncio.create_task(c.publish("door/v1/d/events", b"{}", 1))
    await asyncio.sleep_ms(20)
    micropython.heap_lock()
    try:
        c._end()
    finally:
        micropython.heap_unlock()
    try:
        await asyncio.wait_for_ms(waiting, 1000)
    except Exception as e:  # noqa: BLE001 - MQTTError: the publish is told, not left waiting
        return type(e).__name__
    return "sent"


def test_a_publish_waiting_for_the_window_is_told_when_the_connection_ends_with_no_heap():
    assert asyncio.run(_publish_waits_then_fails()) == "MQTTError"
