"""Simulated doors that speak protocol v1 (docs/protocol.md) to a real broker and platform:
thousands per process on one asyncio loop, for what one virtual device cannot show — many doors
at once, broker failover, scale.

A `SimDoor` does what the firmware's uplink does on the wire: presence (retained, with a last
will) and registration on connect, events sent in batches from the first unacknowledged one,
freed only by the platform's ack, resent after a reconnect; it answers the platform's announce
request, and takes whitelist updates on its `cache` topic as the firmware's cache_sync does
(pieces in order, a piece out of order answered once a burst with where it stands), reporting
its state (`cache_state`, retained at QoS 1, on connect and after each answer, as the firmware).
With its cache key (`cache_key`: the door's own on a per-door site) it checks every piece's tag
and the whole file's tag as the firmware does (firmware/cache_sync.py) and takes nothing that
fails; without one it takes the pieces unchecked. It keeps its journal in memory and never
loses it: the figures it gives are the platform's and the broker's. The card decision and the
journal's flash format are the firmware's own business, measured on the virtual device and
the bare-metal build.

`MiniMQTT` is a small asyncio MQTT 3.1.1 client (QoS 0/1, clean sessions) with no thread per
connection, so one process holds 16,900 of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reference_platform.cache_tags import CacheTags
from reference_platform.mqtt_frames import Packets, remaining_length, string_field
from wire import common
from wire.door import (
    decode_ack,
    decode_cache_chunk,
    encode_cache_state,
    encode_events,
    encode_presence,
)

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = (
    1, 2, 3, 4, 8, 9, 12, 13, 14)


class MQTTClosed(Exception):
    """The connection ended (refused, dropped, or closed by us)."""


class _Wire(asyncio.Protocol):
    """The connection's bytes, cut into MQTT packets as they arrive: every packet a read
    brings is handled in that one call (no coroutine switch per packet), and the packets its
    handling sends (a whitelist piece's state, then its PUBACK) leave in one write: one
    `send` for the door and one read for the broker, not one each."""

    def __init__(self, client: MiniMQTT) -> None:
        self.client = client
        self.packets = Packets()

    def data_received(self, data: bytes) -> None:
        client = self.client
        client._held = []  # what the packets' handling sends goes out in one write at the end
        try:
            for head, body in self.packets.feed(data):
                client._packet(head, body)
        except (ValueError, UnicodeDecodeError, struct.error):  # MalformedPacket is a ValueError
            client._close()
        finally:
            held, client._held = client._held, None
            if held:
                client._write(b"".join(held))

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._close()


class MiniMQTT:
    """One MQTT 3.1.1 connection. `on_message(topic, payload, retained)` is called for each
    PUBLISH received (QoS 1 ones are acknowledged after it returns)."""

    def __init__(self, client_id: str, on_message: Callable[[str, bytes, bool], None],
                 keepalive: int = 60, on_close: Callable[[], None] | None = None) -> None:
        self.client_id = client_id
        self.on_message = on_message
        self.on_close = on_close  # called when the connection ends
        self.keepalive = keepalive
        self._transport: asyncio.Transport | None = None
        self._connack: asyncio.Future[bytes] | None = None
        self._mid = 0
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._held: list[bytes] | None = None  # packets to send once the read is handled
        self.closed = asyncio.Event()

    async def connect(self, host: str, port: int, will: tuple[str, bytes] | None = None,
                      timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        self.closed.clear()
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: _Wire(self), host, port), timeout)
        self._transport = transport
        flags = 0x02  # clean session
        payload = string_field(self.client_id)
        if will is not None:
            flags |= 0x04 | 0x08 | 0x20  # will, QoS 1, retained
            payload += string_field(will[0]) + string_field(will[1])
        body = string_field("MQTT") + bytes([4, flags]) + struct.pack(">H", self.keepalive) + payload
        self._send(bytes([CONNECT << 4]) + remaining_length(len(body)) + body)
        try:
            data = await asyncio.wait_for(self._connack, timeout)
        except TimeoutError:
            self._close()
            raise MQTTClosed("no CONNACK") from None
        if len(data) != 2 or data[1] != 0:
            self._close()
            raise MQTTClosed(f"connection refused ({data.hex()})")
        self._tasks = [asyncio.create_task(self._ping_loop())]

    def _packet(self, head: int, data: bytes) -> None:
        ptype = head >> 4
        if ptype == PUBLISH:
            qos = (head >> 1) & 3
            tlen = (data[0] << 8) | data[1]
            topic = data[2:2 + tlen].decode()
            rest = data[2 + tlen:]
            mid = None
            if qos:
                if len(rest) < 2:
                    raise ValueError("short PUBLISH")
                mid, rest = (rest[0] << 8) | rest[1], rest[2:]
            self.on_message(topic, rest, bool(head & 1))
            if mid is not None:
                self._send(bytes([PUBACK << 4, 2, mid >> 8, mid & 0xFF]))
        elif ptype in (PUBACK, SUBACK):
            fut = self._acks.pop(struct.unpack(">H", data[:2])[0], None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif ptype == CONNACK and self._connack is not None and not self._connack.done():
            self._connack.set_result(data)

    async def _ping_loop(self) -> None:
        with contextlib.suppress(OSError, MQTTClosed):
            while True:
                await asyncio.sleep(self.keepalive / 2)
                self._send(bytes([PINGREQ << 4, 0]))

    def _send(self, packet: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise MQTTClosed("not connected")
        if self._held is not None:  # inside a read's handling: sent with the others after it
            self._held.append(packet)
        else:
            self._transport.write(packet)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _next_mid(self) -> int:
        self._mid = self._mid % 0xFFFF + 1
        return self._mid

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                      timeout: float = 30.0) -> None:
        """QoS 1 waits for the broker's PUBACK; MQTTClosed when the connection goes first."""
        var = string_field(topic)
        mid = self._next_mid() if qos else 0
        if qos:
            var += struct.pack(">H", mid)
        body = var + payload
        self._send(bytes([PUBLISH << 4 | qos << 1 | int(retain)]) + remaining_length(len(body)) + body)
        if qos:  # registered after the send: a future nobody awaits never holds an error
            fut = self._acks[mid] = asyncio.get_running_loop().create_future()
            await self._wait(fut, timeout)

    async def subscribe(self, topics: Sequence[str], timeout: float = 30.0) -> None:
        mid = self._next_mid()
        body = struct.pack(">H", mid) + b"".join(string_field(t) + b"\x01" for t in topics)
        self._send(bytes([SUBSCRIBE << 4 | 2]) + remaining_length(len(body)) + body)
        fut = self._acks[mid] = asyncio.get_running_loop().create_future()
        await self._wait(fut, timeout)

    async def _wait(self, fut: asyncio.Future[None], timeout: float) -> None:
        # No task per wait (thousands of doors publish at once): _close fails the future.
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise MQTTClosed("no acknowledgement") from None

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Send without waiting for the broker's PUBACK (a state report nothing waits on)."""
        var = string_field(topic) + (struct.pack(">H", self._next_mid()) if qos else b"")
        body = var + payload
        self._send(bytes([PUBLISH << 4 | qos << 1 | int(retain)]) + remaining_length(len(body))
                   + body)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()  # what is written still goes out first
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(b"")  # connect() sees a refusal
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(MQTTClosed("connection closed"))
        self._acks.clear()
        self.closed.set()
        if self.on_close is not None:
            self.on_close()

    async def close(self, clean: bool = True) -> None:
        """Disconnect (clean: DISCONNECT first, so the broker does not publish the will)."""
        with contextlib.suppress(MQTTClosed, OSError):
            if clean:
                self._send(bytes([DISCONNECT << 4, 0]))
        self._close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class SimDoor:
    """One door. `brokers` are tried in turn, as a door with a broker list does."""

    device: str
    brokers: list[tuple[str, int]]
    boot: int = 1
    batch: int = 16  # as firmware/uplink.py sends
    window: int = 8  # batches in flight before waiting for acks, as the firmware
    journal: list[list[object]] = field(default_factory=list)  # unacknowledged events, in order
    next_seq: int = 1
    acked: int = 0
    whitelist: int = 0
    updated_at: dict[int, float] = field(default_factory=dict)  # whitelist version -> when held
    connects: int = 0
    announces: int = 0
    cache_key: bytes | None = None  # checks each piece and file as the door does (None: no check)
    refused: int = 0  # pieces or files whose tag was wrong
    _client: MiniMQTT | None = None
    _wake: asyncio.Event | None = None  # made in run(): an Event belongs to one event loop
    # The file being received, as the firmware's CacheSync holds it: its version (0: none),
    # length, the bytes in so far, why the last file was refused, and the last piece not
    # taken that was answered (the later pieces of its burst are dropped unanswered).
    _receiving: int = 0
    _total: int = 0
    _have: int = 0
    _reason: str = ""
    _answered: tuple[int, int] | None = None
    _file: bytearray = field(default_factory=bytearray)
    _tags: CacheTags | None = None
    _rewind: bool = False

    def record(self, code: int = 1, arg: int = 0) -> int:
        """One event into the journal (a swipe, by default); its sequence number."""
        seq = self.next_seq
        self.next_seq += 1
        now = time.time()
        self.journal.append([seq, code, self.boot, int(now), int(now * 1000) % 1000,
                             common.FLAG_TIME_VALID, arg, ""])
        self._kick()
        return seq

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if topic == common.ANNOUNCE_TOPIC:
            self.announces += 1
            asyncio.ensure_future(self._announce())
            return
        leaf = topic.rsplit("/", 1)[-1]
        if leaf == "ack" and not retained:
            with contextlib.suppress(common.ProtocolError):
                upto = decode_ack(payload)
                if upto > self.acked:
                    self.acked = min(upto, self.next_seq - 1)
                    self.journal = [e for e in self.journal if int(e[0]) > self.acked]  # type: ignore[call-overload]
                    self._kick()
        elif leaf == "resend" and not retained:
            self._rewind = True  # the platform misses some: send again from the first unacked
            self._kick()
        elif leaf == "cache":
            with contextlib.suppress(common.ProtocolError):
                self._piece(*decode_cache_chunk(payload))

    def _piece(self, version: int, total: int, offset: int, tag: bytes, data: memoryview) -> None:
        """One whitelist piece, taken and answered as firmware/cache_sync.py `chunk` does: its
        tag checked first (a wrong one stops the transfer it would continue: `bad_chunk`),
        the first piece's version against the one held (`stale_version`), the pieces written
        in order, the whole file's tag checked once the last is in (`bad_tag`). A piece that
        is not the next is answered with the state (version held, `receiving`, `have`) once a
        burst, so the platform goes on from `have`; the later pieces of that burst are
        dropped unanswered."""
        if self.cache_key is not None:
            if self._tags is None:
                self._tags = CacheTags(self.cache_key)
            if not self._tags.piece_ok(version, total, offset, data, tag):
                self.refused += 1
                if self._receiving and (version, offset) == (self._receiving, self._have):
                    self._answered = (version, offset)
                    self._reject("bad_chunk")
                return
        if offset == 0:
            if version <= self.whitelist:  # the firmware's check_offer: refused
                self._answered = (version, offset)
                self._reject("stale_version")
                return
            self._receiving, self._total, self._have, self._reason = version, total, 0, ""
            self._file = bytearray()
        elif (version, total, offset) != (self._receiving, self._total, self._have):
            if self._first_of_burst(version, offset):
                self._report(self._state())
            return
        if self._tags is not None:
            self._file.extend(data)
        self._have += len(data)
        self._answered = None
        if self._have < self._total:
            return
        whole, self._file = self._file, bytearray()
        if self._tags is not None and not self._tags.file_ok(whole):
            self.refused += 1
            self._reject("bad_tag")
            return
        self._receiving = self._total = self._have = 0
        self.whitelist = version
        self.updated_at[version] = time.monotonic()
        self._report(_held(version))

    def _first_of_burst(self, version: int, offset: int) -> bool:
        """Whether a piece the door cannot take is answered: not when it follows one already
        answered in the same burst (same version, a higher offset)."""
        answered, self._answered = self._answered, (version, offset)
        return answered is None or answered[0] != version or offset <= answered[1]

    def _reject(self, reason: str) -> None:
        self._reason = reason
        self._receiving = self._total = self._have = 0
        self._file = bytearray()
        self._report(self._state())

    def _state(self) -> bytes:
        if not (self._receiving or self._reason):
            return _held(self.whitelist)
        return encode_cache_state(self.whitelist, self._receiving, self._have, self._reason)

    def _report(self, state: bytes) -> None:
        """The door's whitelist state, retained at QoS 1 as the firmware publishes it
        (firmware/cache_sync.py publish_state): a platform that subscribes later still finds it."""
        if self._client is not None:
            with contextlib.suppress(MQTTClosed, OSError):
                self._client.publish_nowait(common.topic(self.device, "cache_state"), state,
                                            retain=True)

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _publish(self, leaf: str, payload: bytes, retain: bool = False) -> None:
        if self._client is not None:
            with contextlib.suppress(MQTTClosed, OSError):
                await self._client.publish(common.topic(self.device, leaf), payload, 1, retain)

    async def _announce(self) -> None:
        await self._publish("presence", encode_presence(True, self.boot, "sim"), retain=True)
        await self._publish("cache_state", self._state(), retain=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, send, reconnect (next broker, backoff), until `stop` is set."""
        self._wake = asyncio.Event()
        _kick_when_set(stop, self)
        attempt = 0
        while not stop.is_set():
            host, port = self.brokers[attempt % len(self.brokers)]
            client = MiniMQTT(self.device, self._on_message, keepalive=30, on_close=self._kick)
            try:
                await client.connect(host, port, will=(common.topic(self.device, "presence"),
                                                       encode_presence(False)))
            except (TimeoutError, OSError, MQTTClosed):
                attempt += 1
                await asyncio.sleep(min(0.2 * attempt, 2.0))
                continue
            self._client = client
            self.connects += 1
            began = time.monotonic()
            try:
                leaves = ("ack", "cache", "resend")
                await client.subscribe([common.topic(self.device, leaf) for leaf in leaves]
                                       + [common.ANNOUNCE_TOPIC])
                await self._announce()
                await self._send_loop(client, stop)
            except (TimeoutError, OSError, MQTTClosed):
                attempt += 1
            finally:
                self._client = None
                await client.close(clean=stop.is_set())
            if time.monotonic() - began < 1.0 and not stop.is_set():
                attempt += 1  # dropped right after CONNACK: the next broker, after a pause
                await asyncio.sleep(min(0.2 * attempt, 2.0))

    async def _send_loop(self, client: MiniMQTT, stop: asyncio.Event) -> None:
        sent = self.acked  # resume from the first unacknowledged event
        last_progress = time.monotonic()
        while not stop.is_set() and not client.closed.is_set():
            if self._rewind:
                self._rewind, sent = False, self.acked
            sent = max(sent, self.acked)
            pending = [e for e in self.journal if int(e[0]) > sent]  # type: ignore[call-overload]
            if pending and sent - self.acked < self.batch * self.window:
                chunk = pending[:self.batch]
                await client.publish(common.topic(self.device, "events"),
                                     encode_events(self.boot, chunk))
                sent = int(chunk[-1][0])  # type: ignore[call-overload]
                continue
            if sent > self.acked and time.monotonic() - last_progress > 10:
                sent = self.acked  # no ack in time: send again from the first unacknowledged
                last_progress = time.monotonic()
                continue
            assert self._wake is not None
            self._wake.clear()
            before = self.acked
            if sent > self.acked:  # acks awaited: look again each second (resend after 10 s)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
            else:  # idle, as a door is: woken by an event, an ack, the connection's end, stop
                await self._wake.wait()
            if self.acked != before:
                last_progress = time.monotonic()

    @property
    def backlog(self) -> int:
        return self.next_seq - 1 - self.acked


_STATES: dict[int, bytes] = {}


def _held(version: int) -> bytes:
    """The state "holds `version`": the same bytes for every door, encoded once."""
    state = _STATES.get(version)
    if state is None:
        state = _STATES[version] = encode_cache_state(version)
    return state


_STOP_WATCH: dict[int, tuple[asyncio.Event, list[SimDoor], asyncio.Task[None]]] = {}


def _kick_when_set(stop: asyncio.Event, door: SimDoor) -> None:
    """Wake `door` when `stop` is set: one task per stop event, not one per idle door."""
    watch = _STOP_WATCH.get(id(stop))
    if watch is None or watch[0] is not stop:
        doors: list[SimDoor] = []

        async def kick() -> None:
            try:
                await stop.wait()
                for d in doors:
                    d._kick()
            finally:
                _STOP_WATCH.pop(id(stop), None)

        watch = _STOP_WATCH[id(stop)] = (stop, doors, asyncio.ensure_future(kick()))
    watch[1].append(door)


# -- a process of simulated doors, for the scale benchmark --------------------------------

def _raise_fd_limit() -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _serve(args: object) -> None:
    """Run `doors` doors; print JSON lines as milestones pass; stop at EOF on stdin.

    Commands on stdin (one per line): `mark` prints the monotonic time now (the parent's clock
    and ours are the same: CLOCK_MONOTONIC), `record N` gives every door N more events."""
    import json
    import sys

    a: Any = args
    brokers = list(a.broker)
    doors = [SimDoor(f"{a.prefix}{i}", brokers[i % len(brokers):] + brokers[:i % len(brokers)],
                     batch=a.batch) for i in range(a.first, a.first + a.doors)]
    site = a.site  # the key file, read by main
    if site is not None:
        from host_tools.cards import sitekeys
    for d in doors:
        d.whitelist = a.whitelist
        if site is not None:  # as each door was commissioned: its own key on a per-door site
            d.cache_key = sitekeys.signing_key(site, "cache", d.device)
        for _ in range(a.events):
            d.record()
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = [asyncio.create_task(d.run(stop)) for d in doors]

    def say(**fields: object) -> None:
        print(json.dumps(fields), flush=True)

    state = {"online": False, "drained": a.events == 0}  # "drained" is reported after events

    async def milestones() -> None:
        while True:
            await asyncio.sleep(0.02)
            if state["online"] and state["drained"]:
                continue  # nothing to watch: no sweep over every door (it costs the fan-out)
            n = sum(1 for d in doors if d._client is not None and not d._client.closed.is_set())
            if not state["online"] and n == len(doors):
                state["online"] = True
                say(event="online", doors=n, t=time.monotonic(), since_start=time.monotonic() - started)
            if not state["drained"] and state["online"] and all(d.backlog == 0 for d in doors):
                state["drained"] = True
                say(event="drained", t=time.monotonic(), events=sum(d.next_seq - 1 for d in doors))

    async def commands() -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            word = line.split()
            if word[:1] == ["mark"]:
                say(event="mark", t=time.monotonic())
            elif word[:1] == ["record"]:
                for d in doors:
                    for _ in range(int(word[1])):
                        d.record()
                state["drained"] = False
                say(event="recorded", t=time.monotonic())
            elif word[:1] == ["updates"]:  # when each door got whitelist version N
                v = int(word[1])
                say(event="updates", version=v, refused=sum(d.refused for d in doors),
                    at=[d.updated_at.get(v) for d in doors])
            elif word[:1] == ["online"]:
                n = sum(1 for d in doors if d._client is not None and not d._client.closed.is_set())
                say(event="online_now", doors=n)

    watcher = asyncio.create_task(milestones())
    await commands()
    stop.set()
    watcher.cancel()
    await asyncio.gather(*tasks, watcher, return_exceptions=True)
    say(event="stopped", connects=sum(d.connects for d in doors))


def _broker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (a port 1-65535)")
    return host, int(port)


def _at_least(least: int) -> Callable[[str], int]:
    def number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below {least}")
        return value
    return number


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m host_tools.doorsim --broker H:P --doors N`: a process of simulated doors,
    driven over stdin/stdout (host_tools/benchmarks/scale.py). A bad option is one line and
    exit status 2, before any door starts."""
    ap = argparse.ArgumentParser(prog="python -m host_tools.doorsim")
    ap.add_argument("--broker", action="append", required=True, type=_broker,
                    help="HOST:PORT (repeat: a list)")
    ap.add_argument("--doors", type=_at_least(1), default=100)
    ap.add_argument("--prefix", default="sim.d")
    ap.add_argument("--first", type=_at_least(0), default=0,
                    help="the first door's number (doors PREFIX<first> on: one slice of a city "
                         "run by several processes)")
    ap.add_argument("--events", type=_at_least(0), default=0,
                    help="events each door holds at start")
    ap.add_argument("--batch", type=_at_least(1), default=16)
    ap.add_argument("--whitelist", type=_at_least(0), default=0,
                    help="the whitelist version each door holds")
    ap.add_argument("--keys", help="the site key file: each door checks its whitelist pieces "
                                   "with the cache key it would hold")
    args = ap.parse_args(argv)
    for n in (args.first, args.first + args.doors - 1):
        try:
            common.check_device_id(f"{args.prefix}{n}")
        except common.ProtocolError:
            ap.error(f"argument --prefix: {args.prefix}{n} is not a device id")
    args.site = None
    if args.keys:
        from host_tools.cards import sitekeys
        from host_tools.errors import UserError

        try:
            args.site, _ = sitekeys.load(Path(args.keys), for_doors=True)
        except UserError as e:
            ap.error(f"argument --keys: {e}")
    _raise_fd_limit()
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
