"""A small asyncio MQTT 3.1.1 client for the door controller.

Why our own: the MicroPython MQTT packages on the registries are stale or unfinished, and the
classic `umqtt.simple` turns protocol errors into asserts, has no reconnect and blocks the
loop on QoS 1. This one:

- never blocks the event loop (asyncio streams, TCP or TLS);
- treats every protocol violation as MQTTError and closes the connection (the caller
  reconnects with backoff: see `Backoff`);
- bounds memory: an inbound payload above its topic's limit (`limit_for(topic)`, else
  `max_packet`) is read in fixed chunks into one small buffer and dropped, never held (QoS 1
  ones are still acknowledged so the broker does not redeliver them forever), and at most
  `max_inflight` QoS 1 publishes are unacknowledged at once;
- a message its handler fails on (MemoryError included) is refused (`on_refused`), never the
  connection;
- keeps the connection alive (PINGREQ) and detects a dead peer (no packet for 1.5 keepalives).
"""

import asyncio
import struct

from ticks import ticks_diff, ticks_ms

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

try:
    import random

    _rand = random.getrandbits
except ImportError:  # pragma: no cover
    def _rand(bits):
        return 0

_MAX_TOPIC = const(256)  # bytes: longer topics are skipped unread (ours are door/v1/<id>/<leaf>)
# Packet types (the first byte), folded into the bytecode.
_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_SUBACK = const(0x90)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)
_DISCONNECT = const(0xE0)

# CONNACK return codes 1-5 (a tuple of constants is frozen into the image; a dict is not)
_CONNACK_REASONS = const(("unacceptable protocol version", "client id rejected",
                          "server unavailable", "bad user name or password", "not authorised"))


def connack_reason(code):
    """Why the broker refused the connection, from its CONNACK return code."""
    return _CONNACK_REASONS[code - 1] if 1 <= code <= len(_CONNACK_REASONS) else str(code)


class MQTTError(Exception):
    pass


class TLSError(MQTTError):
    """The TLS connection to the broker could not be made; the message says why (one line,
    never key material): see firmware/tlsconf.py."""


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return out


def _str(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("!H", len(s)) + s


class Backoff:
    """Jittered exponential backoff for reconnects: 1 s, 2 s, 4 s ... capped, +-25% jitter."""

    def __init__(self, first_ms=1000, cap_ms=60000):
        self.first_ms = first_ms
        self.cap_ms = cap_ms
        self.attempt = 0

    def next_ms(self):
        base = min(self.cap_ms, self.first_ms << min(self.attempt, 16))
        self.attempt += 1
        # 0 .. base/2, in small ints: _rand(16) * base passed 2**30 from 32 s on, a long int
        # asked of the heap in the uplink's last resort after a MemoryError.
        jitter = (_rand(15) * (base >> 1)) >> 15
        return base * 3 // 4 + jitter

    def reset(self):
        self.attempt = 0


def _close_now(w):
    """Close a stream at once, without a coroutine (making one may find no heap): MicroPython's
    asyncio Stream closes its socket only in wait_closed(); firmware/tlsstream.py's and
    CPython's close in close()."""
    try:
        w.close()
        s = getattr(w, "s", None)
        if s is not None:
            s.close()
    except Exception:
        pass


class MQTTClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=30,
                 ssl=None, will=None, max_packet=2064, max_inflight=8, on_message=None,
                 limit_for=None, on_refused=None, rx_buf=None):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.will = will  # (topic, payload, qos, retain) or None
        self.max_packet = max_packet
        self.max_inflight = max_inflight
        self.on_message = on_message  # callable(topic_str, payload_bytes, retained)
        self.limit_for = limit_for  # callable(topic_str) -> largest payload accepted on it
        self.on_refused = on_refused  # callable(reason, topic_str): a message was dropped
        self._scratch = None  # the drain buffer, made on first use
        # Where an inbound payload is read (a bytearray the owner made once, at boot, while
        # the heap was whole): a whitelist piece asked of a fragmented heap per message is
        # what runs out first. A payload is handed on as a memoryview of it, valid until its
        # handler returns; one larger than it (or with none) gets a bytearray of its own.
        self._rx = rx_buf
        self._reader = None
        self._writer = None
        self._drainer = None  # the task waiting in drain() (one: writers take turns)
        self._cut = None  # that task, woken by end() with a cancel of its own
        self._pid = 0
        self._inflight = {}  # pid -> True until PUBACK
        self._suback = {}
        self._last_rx = 0
        self._tasks = []
        self._closed = None  # an Event, made only for wait_closed()
        self._wbusy = False  # a writer is sending (one at a time: see _send)
        self.last_error = ""  # why the read loop ended
        self.connected = False
        self.dropped_oversize = 0
        # A message is in its handler (a whitelist piece being written): the owner holds back
        # work of its own that needs heap (the uplink's next events batch) until it returns.
        self.delivering = False

    # -- connection ----------------------------------------------------------------

    async def connect(self, clean_session=True, timeout_ms=10000):
        """Open the stream (TCP, or TLS with `ssl`: an SSLContext, the handshake checked
        against `host`), send CONNECT and wait for CONNACK. On any failure the stream is
        closed and the exception goes to the caller as it was (a TLS failure shows as the
        ValueError/OSError mbedTLS raised: firmware/tlsconf.py names it); EOF before CONNACK
        on a plain connection is an MQTTError."""
        try:
            if self.ssl is not None:
                # Not asyncio's TLS stream: the loop must never poll the TLS socket itself
                # (firmware/tlsstream.py says why). Imported by TLS doors only.
                from firmware.tlsstream import open_tls

                self._reader = self._writer = await asyncio.wait_for_ms(
                    open_tls(self.host, self.port, self.ssl), timeout_ms)
            else:
                self._reader, self._writer = await asyncio.wait_for_ms(
                    asyncio.open_connection(self.host, self.port), timeout_ms)
            return await self._handshake(clean_session, timeout_ms)
        except MQTTError:
            raise
        except Exception as e:
            self.end()
            if self.ssl is None and isinstance(e, EOFError):
                raise MQTTError("connection closed before CONNACK")
            raise

    async def _handshake(self, clean_session, timeout_ms):
        flags = 0x02 if clean_session else 0
        body = bytearray(_str("MQTT"))
        payload = bytearray(_str(self.client_id))
        if self.will:
            topic, msg, qos, retain = self.will
            flags |= 0x04 | (qos & 3) << 3 | (0x20 if retain else 0)
            payload += _str(topic) + _str(msg)
        if self.user is not None:
            flags |= 0x80
            payload += _str(self.user)
            if self.password is not None:
                flags |= 0x40
                payload += _str(self.password)
        body += struct.pack("!BBH", 4, flags, self.keepalive)
        body += payload
        # Over TLS the handshake runs as CONNECT is sent: bounded like the answer.
        await asyncio.wait_for_ms(self._send(_CONNECT, body), timeout_ms)
        hdr = await asyncio.wait_for_ms(self._reader.readexactly(4), timeout_ms)
        if hdr[0] != _CONNACK or hdr[1] != 2:
            self.end()
            raise MQTTError("bad CONNACK")
        if hdr[3] != 0:
            self.end()
            raise MQTTError("connection refused: " + connack_reason(hdr[3]))
        self.connected = True
        # CONNECT is sent: not needed again (a client connects once; the uplink makes a new one)
        self.will = self.user = self.password = None
        self._closed = None
        self._last_rx = ticks_ms()
        self._tasks = [asyncio.create_task(self._read_loop()),
                       asyncio.create_task(self._ping_loop())]
        return hdr[2] & 1  # session present

    def end(self):
        """End the connection, allocating nothing and awaiting nothing: the read loop ends
        here when the heap is exhausted, and a MemoryError on the way (making close()'s
        coroutine was one) left `connected` true over a socket nobody read: the uplink
        waited for PUBACKs forever."""
        self.connected = False
        cur = asyncio.current_task()
        d = self._drainer
        for t in self._tasks:
            if t is not cur and t is not d:
                t.cancel()
        self._tasks = ()  # the empty tuple is a constant: no heap
        if d is not None and d is not cur:
            # Cancelling the reader drops the stream's whole entry from MicroPython's I/O
            # queue, a writer waiting in drain() with it: that one would wait forever (the
            # keepalive found a silent broker). It is woken by a cancel of its own, which
            # _flush() turns into MQTTError.
            self._cut = d
            d.cancel()
        w = self._writer
        self._writer = None
        if w is not None:
            _close_now(w)
        self._inflight.clear()
        if self._closed is not None:
            self._closed.set()

    async def close(self, send_disconnect=True):
        if self.connected and send_disconnect:
            try:
                await self._send(_DISCONNECT, b"")
            except Exception:
                pass
        self.end()

    async def wait_closed(self):
        if not self.connected:
            return
        if self._closed is None:
            self._closed = asyncio.Event()
        await self._closed.wait()

    # -- sending -------------------------------------------------------------------

    async def _send(self, first, body):
        # One writer at a time: asyncio's stream keeps a single output buffer, and two tasks
        # draining it at once (a PUBACK from the reader while a publish is half sent) would
        # send bytes twice or drop them, and the broker would close the connection.
        while self._wbusy:
            await asyncio.sleep_ms(2)
        self._wbusy = True
        try:
            w = self._writer
            if w is None:
                raise MQTTError("not connected")
            w.write(bytes([first]) + _varint(len(body)))
            if body:
                w.write(body)
            await self._flush(w)
        finally:
            self._wbusy = False

    async def _flush(self, w):
        me = asyncio.current_task()
        self._drainer = me
        try:
            await w.drain()
        except asyncio.CancelledError:
            if self._cut is not me:
                raise  # the owner's cancel
            self._cut = None
            raise MQTTError("connection lost") from None
        finally:
            if self._drainer is me:
                self._drainer = None

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def inflight(self):
        return len(self._inflight)

    async def publish(self, topic, payload, qos=0, retain=False):
        """Send a PUBLISH; for QoS 1 returns the packet id (PUBACK tracked, not awaited)."""
        if not self.connected:
            raise MQTTError("not connected")
        # A handler runs inside the read loop, which alone takes PUBACKs off the connection:
        # its own publishes (a command's reply, a whitelist state) go out past the window,
        # or they would wait for PUBACKs that cannot be read while they wait.
        reader = self._tasks[0] if self._tasks else None
        while qos and len(self._inflight) >= self.max_inflight \
                and asyncio.current_task() is not reader:
            if not self.connected:
                raise MQTTError("connection lost")
            await asyncio.sleep_ms(5)
        # Everything that allocates comes before the packet id is taken as in flight, and that
        # before the first byte is written: a MemoryError on the way leaves no id waiting for
        # a PUBACK that cannot come (eight of them stop every publish until a reconnect).
        head = bytearray(_str(topic))
        pid = 0
        if qos:
            pid = self._next_pid()
            head += struct.pack("!H", pid)
        first = _PUBLISH | (qos & 1) << 1 | (1 if retain else 0)
        fixed = bytes([first]) + _varint(len(head) + len(payload))
        while self._wbusy:
            await asyncio.sleep_ms(2)
        self._wbusy = True
        try:
            w = self._writer
            if w is None:
                raise MQTTError("not connected")
            if qos:
                self._inflight[pid] = True
            try:
                w.write(fixed)
                w.write(head)
                w.write(payload)
                await self._flush(w)
            except MemoryError:
                # Part of the packet may be queued already (a stream copies what the socket
                # did not take): the connection is out of step, so it ends here, and the
                # uplink connects again (its window empties; the events are sent again).
                self.end()
                raise MQTTError("out of memory inside a packet")
        finally:
            self._wbusy = False
        return pid

    async def wait_published(self, timeout_ms=10000):
        """Wait until every QoS 1 publish has its PUBACK."""
        waited = 0
        while self._inflight:
            if not self.connected:
                raise MQTTError("connection lost")
            if waited >= timeout_ms:
                raise MQTTError("PUBACK timeout")
            await asyncio.sleep_ms(5)
            waited += 5
        if not self.connected:  # closing empties the window: that is no PUBACK
            raise MQTTError("connection lost")

    async def subscribe(self, topic, qos=1, timeout_ms=10000):
        pid = self._next_pid()
        self._suback[pid] = None
        await self._send(_SUBSCRIBE, struct.pack("!H", pid) + _str(topic) + bytes([qos]))
        waited = 0
        while self._suback.get(pid) is None:
            if not self.connected or waited >= timeout_ms:
                self._suback.pop(pid, None)
                raise MQTTError("SUBACK timeout")
            await asyncio.sleep_ms(5)
            waited += 5
        granted = self._suback.pop(pid)
        if granted == 0x80:
            raise MQTTError("subscription refused: " + topic)
        return granted

    # -- receiving -----------------------------------------------------------------

    async def _read_remaining_length(self):
        n = 0
        shift = 0
        for _ in range(4):
            b = (await self._reader.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
        raise MQTTError("malformed remaining length")

    async def _drain(self, n):
        """Read and drop n bytes through one fixed 256-byte buffer: nothing of the size of
        the packet is ever allocated."""
        buf = self._scratch
        if buf is None:
            buf = self._scratch = memoryview(bytearray(256))
        readinto = getattr(self._reader, "readinto", None)
        while n:
            if readinto is None:  # CPython streams: only the scripted tests take this path
                got = len(await self._reader.read(min(n, 256)))
            else:
                got = await readinto(buf[:min(n, 256)])
                if got is None:  # a TLS record not complete yet: nothing read
                    continue
            if not got:
                raise MQTTError("connection closed")
            n -= got

    async def _read_into(self, mv):
        readinto = getattr(self._reader, "readinto", None)
        got_all = 0
        n = len(mv)
        while got_all < n:
            if readinto is None:
                chunk = await self._reader.read(n - got_all)
                got = len(chunk)
                mv[got_all:got_all + got] = chunk
            else:
                got = await readinto(mv[got_all:])
                if got is None:
                    continue
            if not got:
                raise MQTTError("connection closed")
            got_all += got

    def _refused(self, topic, reason):
        if self.on_refused is not None:
            try:
                self.on_refused(reason, topic)
            except Exception:
                pass

    async def _read_loop(self):
        try:
            while True:
                first = (await self._reader.readexactly(1))[0]
                n = await self._read_remaining_length()
                self._last_rx = ticks_ms()
                kind = first & 0xF0
                if kind == _PUBLISH:
                    await self._on_publish(first, n)
                elif n > 64:
                    raise MQTTError("unexpected packet size")
                else:
                    body = await self._reader.readexactly(n) if n else b""
                    self._on_control(kind, body)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # EOF, reset, malformed packet, no memory: the connection is over; the owner
            # reconnects (and says why, for the installer reading the log).
            try:
                self.last_error = "%s %s" % (type(e).__name__, e)
            except MemoryError:
                self.last_error = "MemoryError"  # a constant: the message needs heap
        self.end()

    async def _on_publish(self, first, n):
        qos = (first >> 1) & 3
        if qos > 1:
            raise MQTTError("QoS 2 not supported")
        tlen = struct.unpack("!H", await self._reader.readexactly(2))[0]
        if tlen + 2 > n:
            raise MQTTError("malformed PUBLISH")
        if tlen > _MAX_TOPIC:  # no topic of ours is this long: skipped, memory stays bounded
            await self._drain(tlen)
            topic = None
        else:
            try:
                topic = (await self._reader.readexactly(tlen)).decode()
            except UnicodeError:
                topic = None
        rest = n - 2 - tlen
        pid = 0
        if qos:
            if rest < 2:
                raise MQTTError("malformed PUBLISH")
            pid = struct.unpack("!H", await self._reader.readexactly(2))[0]
            rest -= 2
        cap = self.max_packet
        if topic is not None and self.limit_for is not None:
            cap = self.limit_for(topic)
        if topic is None or rest > cap:
            await self._drain(rest)
            self.dropped_oversize += 1  # dropped unread
            self._refused(topic or "", "too_large" if topic is not None else "bad_topic")
        else:
            await self._deliver(topic, rest, bool(first & 1))
        if qos:
            # Acknowledged after the handler ran. The session is clean, so the broker does not
            # redeliver a message whose handler did not finish: what the door is sent is
            # single-shot by design (a command gets its reply or times out at the platform; a
            # whitelist transfer resumes from the state the door publishes on connecting).
            await self._send(_PUBACK, struct.pack("!H", pid))

    async def _deliver(self, topic, n, retained):
        """Read an n-byte payload and hand it to the handler (a memoryview, valid until the
        handler returns: it is not kept). Whatever goes wrong in there, a
        MemoryError included, costs this message only: the stream is still in step (the
        payload was read whole, or dropped in chunks when it could not be allocated)."""
        rx = self._rx
        if rx is not None and n <= len(rx):
            payload = memoryview(rx)[:n]  # the connection's buffer: nothing of n allocated
        else:
            try:
                payload = memoryview(bytearray(n))  # the one allocation, before a byte is read
            except MemoryError:
                await self._drain(n)  # the stream stays in step
                self._refused(topic, "no_memory")
                return
        await self._read_into(payload)
        if self.on_message is None:
            return
        self.delivering = True
        try:
            try:
                res = self.on_message(topic, payload, retained)
                payload = None
                if res is not None and hasattr(res, "send"):
                    await res
            except MQTTError:
                raise  # the connection itself failed under the handler (a reply it sent)
            except MemoryError:
                payload = res = None
                self._refused(topic, "no_memory")
            except Exception:
                self._refused(topic, "error")
        finally:
            self.delivering = False  # a cancel included: the uplink's batches never stay held

    def _on_control(self, kind, body):
        if kind == _PUBACK and len(body) == 2:
            self._inflight.pop(struct.unpack("!H", body)[0], None)
        elif kind == _SUBACK and len(body) >= 3:
            pid = struct.unpack("!H", body[:2])[0]
            if pid in self._suback:
                self._suback[pid] = body[2]
        elif kind == _PINGRESP:
            pass
        else:
            raise MQTTError("unexpected packet 0x%02x" % kind)

    async def _ping_loop(self):
        """The keepalive: a PINGREQ every half period, and the connection ended when nothing
        has come from the broker for one and a half. It never waits on the socket: to a broker
        that reads nothing more, a write waits in drain() for good (a publish, or a PINGREQ
        sent from here), and this check must still come."""
        ka_ms = self.keepalive * 1000
        if ka_ms <= 0:
            return  # keepalive 0: off, as MQTT defines it (no pings, no timeout)
        while self.connected:
            await asyncio.sleep_ms(ka_ms // 2)
            if ticks_diff(ticks_ms(), self._last_rx) > ka_ms * 3 // 2:
                self.end()
                return
            if not self._wbusy:  # else a write is under way: no PINGREQ behind it
                try:
                    asyncio.create_task(self._ping())
                except MemoryError:
                    pass  # none this time; the check goes on

    async def _ping(self):
        try:
            await self._send(_PINGREQ, b"")
        except Exception:
            self.end()
