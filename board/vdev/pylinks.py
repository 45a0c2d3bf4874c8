"""The virtual board's host links in Python: the I/O channel's server and the reader UART.

The unix32 image has the same links in C (board/unix32/cmodules/vboard/modlinks.c, chosen by
board/virtual.py), outside the MicroPython heap it measures; this module is for the 64-bit PyPI
interpreter, where `vboard` does not exist. Both speak docs/virtual-device.md, and the same
tests run against both (tests/host/vdev/test_virtual_device.py on each image).
"""

import asyncio
import json
import socket

OUTBOX_MAX = 256  # pending output notifications kept for a slow channel client
CLIENTS_MAX = 8  # channel clients at once: one more is closed at once (as HUB_CLIENTS in C)
LINE_MAX = 4096  # a longer request line ends that client's connection (LINE_MAX_BYTES in C)
REPLY_MAX = 32 * 1024  # a longer reply is answered "reply too long" (OUTBOX_BYTES / 2 in C)
RX_BYTES = 512  # the reader link's receive buffer: the ESP32 board's UART rxbuf (a PN532
# frame is at most 262 bytes)

INPUT_DEFAULTS = {
    "door_contact": "closed",
    "rex": False,
    "tamper": False,
    "fire": False,
    "power": True,
}
CONTACT_STATES = ("closed", "open", "short", "cut")
IPPROTO_TCP = 6  # Linux's numbers: the unix port's socket module does not name them
TCP_NODELAY = 1
ENFILE = 23  # nor errno's these
EMFILE = 24

# A descriptor held back for the moment the process has none left (EMFILE, or ENFILE for the
# system): accept() then fails and leaves the connection waiting, the listening socket stays
# readable and the task that polls it spins. One for both links: _accept() lends it.
_reserve = []


def _no_delay(writer):
    """The I/O channel and the reader link are request/response streams: without
    TCP_NODELAY a small write waits for the peer's delayed ACK (~40 ms on loopback)."""
    try:
        writer.s.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass


class IOChannel:
    """Inputs set by the host; output changes pushed to every connected host client."""

    def __init__(self, clock):
        self.clock = clock
        self.inputs = dict(INPUT_DEFAULTS)
        self.outputs = {"relay": False, "buzzer": False, "led": "off"}
        self.clients = []
        self.status_provider = None
        self._wake = asyncio.Event()

    def emit(self, kind, name, value):
        line = json.dumps({"ev": kind, "name": name, "value": value,
                           "t": self.clock.ticks_ms()})
        line += "\n"
        for c in self.clients:
            box = c[1]
            if len(box) >= OUTBOX_MAX:  # the oldest line goes whole (a reply is two entries)
                while box and not box.pop(0).endswith("\n"):
                    pass
            box.append(line)
        self._wake.set()

    def set_output(self, name, value):
        if self.outputs.get(name) != value:
            self.outputs[name] = value
            self.emit("out", name, value)

    def _handle(self, msg):
        op = msg.get("op")
        if op == "set":
            name, value = msg.get("name"), msg.get("value")
            if not isinstance(name, str) or name not in self.inputs:
                return {"ok": False, "error": "unknown input %s" % name}
            if name == "door_contact":
                if value not in CONTACT_STATES:
                    return {"ok": False, "error": "door_contact is one of closed/open/short/cut"}
            elif not isinstance(value, bool):
                return {"ok": False, "error": "%s takes true or false" % name}
            self.inputs[name] = value
            self.emit("in", name, value)
            return {"ok": True, "t": self.clock.ticks_ms()}
        if op == "get":
            return {"ok": True, "inputs": self.inputs, "outputs": self.outputs,
                    "t": self.clock.ticks_ms()}
        if op == "status":
            st = self.status_provider() if self.status_provider else {}
            keys = msg.get("keys")
            if keys is not None:
                # Only these: a host asking after every card (the soak) needs two figures,
                # not the whole report (~800 bytes of JSON each time, in a tight heap).
                bad = not isinstance(keys, list)
                if not bad:
                    for k in keys:
                        if not isinstance(k, str):  # a list or a dict: a TypeError below,
                            bad = True  # which ended the connection without an answer
                if bad:
                    return {"ok": False, "error": "keys is a list of status names"}
                st = {k: st[k] for k in keys if k in st}
            return {"ok": True, "status": st, "t": self.clock.ticks_ms()}
        return {"ok": False, "error": "unknown op"}

    def _answer(self, line):
        """The reply line to a request line. Whatever fails (a MemoryError in a tight heap, a
        status the json module cannot write) is the answer: the client is told by the
        exception's type, and the channel carries on."""
        try:
            msg = json.loads(line)
        except ValueError:
            return json.dumps({"ok": False, "error": "not JSON", "re": True})
        try:
            reply = self._handle(msg) if isinstance(msg, dict) else {"ok": False}
            reply["re"] = True
            text = json.dumps(reply)
        except Exception as e:  # noqa: BLE001
            return json.dumps({"ok": False, "error": type(e).__name__, "re": True})
        if len(text) >= REPLY_MAX:
            return json.dumps({"ok": False, "error": "reply too long", "re": True})
        return text

    async def serve_client(self, reader, writer):
        if len(self.clients) >= CLIENTS_MAX:
            await writer.wait_closed()  # MicroPython's: close() alone leaves the socket open
            return
        _no_delay(writer)
        box = []
        entry = (writer, box)
        self.clients.append(entry)
        flusher = asyncio.create_task(self._flush(writer, box))
        pending = b""  # what came after the last whole line: never more than LINE_MAX bytes
        try:
            while True:
                chunk = await reader.read(512)
                if not chunk:
                    break
                pending += chunk
                end = pending.find(b"\n")
                while 0 <= end < LINE_MAX:
                    line, pending = pending[:end], pending[end + 1:]
                    # The line and its end queued apart: a status reply is ~800 bytes, and a
                    # copy of it with "\n" beside it was the piece a tight heap failed to give.
                    box.append(self._answer(line))
                    box.append("\n")
                    self._wake.set()
                    end = pending.find(b"\n")
                if end >= LINE_MAX or (end < 0 and len(pending) >= LINE_MAX):
                    break  # no request is that long: the client goes
        except OSError:
            pass
        finally:
            flusher.cancel()
            self.clients.remove(entry)
            try:
                writer.close()
                await writer.wait_closed()
            except OSError:
                pass

    async def _flush(self, writer, box):
        while True:
            while box:
                writer.write(box.pop(0))
            await writer.drain()  # yields: lines may have been queued meanwhile
            if box:
                continue
            # No await between this check and the wait: nothing can be queued unseen.
            self._wake.clear()
            await self._wake.wait()


class Output:
    def __init__(self, io, name):
        self._io = io
        self._name = name

    def set(self, value):
        self._io.set_output(self._name, value)

    def value(self):
        return self._io.outputs[self._name]


class Input:
    def __init__(self, io, name):
        self._io = io
        self._name = name

    def read(self):
        return self._io.inputs[self._name]


class ReaderUART:
    """The PN532 link: bytes to and from whichever host emulator is connected.

    Received bytes wait in one buffer made here, not in a bytearray made per
    chunk received and per read: the card task polls five times a second. Bytes arrive at
    `_tail` and are taken from `_head`; only the receiving side moves `_tail` or moves bytes (a
    read taken while it waits for the socket must not shift what it is about to write after)."""

    def __init__(self):
        self._reader = None
        self._writer = None
        self._rxv = memoryview(bytearray(RX_BYTES))
        self._head = 0
        self._tail = 0
        self._rx_event = asyncio.Event()

    def connected(self):
        return self._writer is not None

    def write(self, data):
        if self._writer is not None:
            self._writer.write(data)
            return len(data)
        return 0

    async def drain(self):
        if self._writer is not None:
            try:
                await self._writer.drain()
            except OSError:
                pass

    def any(self):
        return self._tail - self._head

    def reset_input(self):
        self._head = self._tail

    def _room(self):
        """Make room at the tail: the buffer starts over when empty, what is held moves down
        when the tail reached the end, and a full buffer nobody reads is dropped (a UART's
        overrun)."""
        if self._head == self._tail:
            self._head = self._tail = 0
        elif self._tail == RX_BYTES:
            held = self._tail - self._head
            if held == RX_BYTES:
                self._head = self._tail = 0
            else:
                self._rxv[:held] = self._rxv[self._head:self._tail]  # a memmove
                self._head, self._tail = 0, held

    def feed(self, data):
        """Bytes from the emulator, as the link receives them (tests feed it directly)."""
        data = memoryview(data)
        while data:
            self._room()
            k = min(len(data), RX_BYTES - self._tail)
            self._rxv[self._tail:self._tail + k] = data[:k]
            self._tail += k
            data = data[k:]
        self._rx_event.set()

    async def read(self, n, timeout_ms=None):
        """Up to n bytes; waits for at least one (or returns b"" after timeout_ms)."""
        waited = 0
        while self._head == self._tail:
            self._rx_event.clear()
            if timeout_ms is None:
                await self._rx_event.wait()
            else:
                if waited >= timeout_ms:
                    return b""
                try:
                    await asyncio.wait_for_ms(self._rx_event.wait(), timeout_ms - waited)
                except asyncio.TimeoutError:  # noqa: UP041  MicroPython's is not the builtin
                    return b""
                waited = timeout_ms  # one wait only: data or timeout
        k = min(n, self._tail - self._head)
        out = bytes(self._rxv[self._head:self._head + k])
        self._head += k
        return out

    async def serve_client(self, reader, writer):
        if self._writer is not None:
            await writer.wait_closed()  # one emulator at a time (close() alone leaves it open)
            return
        _no_delay(writer)
        self._reader, self._writer = reader, writer
        try:
            while True:
                self._room()
                got = await reader.readinto(self._rxv[self._tail:])  # straight into the buffer
                if got is None:
                    continue  # woken with nothing to read
                if not got:
                    break
                self._tail += got
                self._rx_event.set()
        except OSError:
            pass
        finally:
            self._reader = self._writer = None
            try:
                writer.close()
                await writer.wait_closed()
            except OSError:
                pass


def _readable(s):
    """Awaitable: until asyncio's poller finds `s` readable."""
    yield asyncio.core._io_queue.queue_read(s)


async def _accept(s, serve_client):
    """asyncio's start_server loop, which ignores a failed accept and so spun out of
    descriptors. Then the waiting connection is taken with the reserve's and closed at once
    (the host sees it closed), as modlinks.c does: the socket is readable again only for a
    new one."""
    while True:
        await _readable(s)
        try:
            c = s.accept()[0]
        except OSError as e:
            if e.errno in (EMFILE, ENFILE) and _reserve:
                _reserve.pop().close()
                try:
                    s.accept()[0].close()
                except OSError:
                    pass
                try:  # the descriptor just freed (ENFILE: unless another process took it)
                    _reserve.append(open("/dev/null", "rb"))
                except OSError:
                    pass
            continue
        c.setblocking(False)
        stream = asyncio.StreamReader(c)
        asyncio.create_task(serve_client(stream, stream))


def _listen(port, serve_client):
    """start_server's socket (listening when this returns), served by _accept()."""
    s = socket.socket()
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    s.listen(5)
    asyncio.create_task(_accept(s, serve_client))


async def serve(board):
    """Both links' servers, on the board's ports, listening when this returns."""
    if not _reserve:
        _reserve.append(open("/dev/null", "rb"))
    _listen(board.io_port, board.io.serve_client)
    _listen(board.reader_port, board.reader_uart.serve_client)
