"""The uplink's TLS stream: the event loop waits on the TCP socket under the TLS layer,
never on the TLS socket itself.

Why not `asyncio.open_connection(ssl=...)`: an SSL socket has no file descriptor, and the
unix port's `select.poll` (MicroPython 1.28, and the 1.29 preview on PyPI) keeps such objects
beside the descriptors of one poll set. When that set's descriptor array has to grow and
moves (a fifth socket waits at once: the I/O channel, the reader link to the PN532 and their
servers beside the broker's), the port rewrites every entry's pointer into the array, the TLS
socket's too although it has none: from then on the TLS socket is never polled (its
handshake neither completes nor fails) and its events are written outside the array (the
process crashes or the loop stops answering). Waiting on the TCP socket keeps only
descriptors in the loop's poll set; on the ESP32 that socket is polled as well as the TLS one.

What asyncio's stream did through the TLS socket's poll is done here by reading first: data
mbedTLS already holds is taken before the loop is asked to wait, so nothing decrypted waits
for more bytes on the wire. A write that cannot go on is retried with the same bytes, as
mbedTLS requires. Until a read or a write has gone through, the handshake is running and
mostly needs the broker's next flight: the loop waits for the socket to be readable, for at
most _HANDSHAKE_WAIT_MS, so a handshake that needed to write instead goes on all the same.
"""

import asyncio
from asyncio import core

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

_HANDSHAKE_WAIT_MS = const(50)


def _wait_read(sock):
    yield core._io_queue.queue_read(sock)


def _wait_write(sock):
    yield core._io_queue.queue_write(sock)


class TLSStream:
    """Reader and writer of one TLS connection, with the calls the MQTT client makes."""

    def __init__(self, sock, tls):
        self._sock = sock  # the TCP socket: what the loop waits on
        self._tls = tls
        self._out = []  # buffers written and not sent yet; the caller keeps them until drain
        self._open = False  # the handshake is over: a read or a write has gone through

    async def _wait(self, write):
        if self._open:
            await (_wait_write(self._sock) if write else _wait_read(self._sock))
            return
        try:
            await asyncio.wait_for_ms(_wait_read(self._sock), _HANDSHAKE_WAIT_MS)
        except asyncio.TimeoutError:  # noqa: UP041  MicroPython's is not the builtin
            pass

    async def readinto(self, buf):
        while True:
            n = self._tls.readinto(buf)
            if n is not None:
                self._open = True
                await asyncio.sleep_ms(0)  # as a stream read would: the other tasks get a turn
                return n
            await self._wait(False)

    async def readexactly(self, n):
        out = b""
        while n:
            got = self._tls.read(n)
            if got is None:
                await self._wait(False)
                continue
            self._open = True
            if not got:
                raise EOFError
            out += got
            n -= len(got)
        await asyncio.sleep_ms(0)
        return out

    def write(self, buf):
        self._out.append(buf)

    async def drain(self):
        out = self._out
        while out:
            mv = memoryview(out[0])
            off = 0
            while off < len(mv):
                n = self._tls.write(mv[off:])
                if n is None:
                    await self._wait(True)
                else:
                    self._open = True
                    off += n
            out.pop(0)
        await asyncio.sleep_ms(0)

    def close(self):
        """At once, allocating nothing (firmware/mqtt.py ends a connection with no heap)."""
        self._tls.close()  # closes the TCP socket under it too

    async def wait_closed(self):
        pass


async def open_tls(host, port, ctx):
    """A TLSStream to host:port, the TCP connection made; the handshake runs with the first
    write (the MQTT CONNECT), and its failure is raised from there as mbedTLS raised it."""
    import socket
    from errno import EINPROGRESS

    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    sock = socket.socket(ai[0], ai[1], ai[2])
    sock.setblocking(False)
    try:
        try:
            sock.connect(ai[-1])
        except OSError as e:
            if e.errno != EINPROGRESS:
                raise
        tls = ctx.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    except BaseException:
        sock.close()
        raise
    tls.setblocking(False)
    stream = TLSStream(sock, tls)
    try:
        await _wait_write(sock)  # connected (or refused: the first write says which)
    except BaseException:
        tls.close()
        raise
    return stream
