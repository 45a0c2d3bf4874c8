"""A TCP proxy between an MQTT client and the broker that injects network faults on demand:
cut the connection in the middle of a PUBLISH, or drop chosen packets on the way to the
client (e.g. the platform's acknowledgements). It parses MQTT 3.1.1 fixed headers only, so
it sees packet boundaries without understanding more than the topic of a PUBLISH.

    with FaultProxy(broker.host, broker.port) as proxy:   # device connects to proxy.port
        proxy.cut_next_publish_from_client("events")       # connection dies mid-packet
        proxy.drop_to_client(lambda topic: topic.endswith("/ack"), count=3)
        proxy.cut_after_connack(4)                         # 4 connections die after CONNACK
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from types import TracebackType

from host_tools.services import free_port

PUBLISH = 3


def packet_length(buf: bytes | bytearray) -> int | None:
    """Total length of the MQTT packet at the start of `buf`, or None while incomplete."""
    mult, value, i = 1, 0, 1
    while True:
        if i >= len(buf):
            return None
        b = buf[i]
        value += (b & 0x7F) * mult
        i += 1
        if not b & 0x80:
            break
        mult *= 128
        if i > 4:
            raise ValueError("malformed remaining length")
    total = i + value
    return total if len(buf) >= total else None


def publish_topic(packet: bytes | bytearray) -> str | None:
    """The topic of a PUBLISH packet, else None."""
    if packet[0] >> 4 != PUBLISH:
        return None
    i = 1
    while packet[i] & 0x80:
        i += 1
    i += 1
    n = (packet[i] << 8) | packet[i + 1]
    return bytes(packet[i + 2:i + 2 + n]).decode("utf-8", "replace")


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, port: int | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._drop: tuple[Callable[[str], bool], int] | None = None
        self._cut: str | None = None
        self._cut_connack = 0
        self.connack_cuts = 0
        self.dropped: list[str] = []
        self.cuts = 0
        self.connections = 0
        self._server: socket.socket | None = None
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()

    # -- faults ---------------------------------------------------------------------------

    def drop_to_client(self, match: Callable[[str], bool], count: int) -> None:
        """Drop the next `count` PUBLISH packets to the client whose topic matches."""
        with self._lock:
            self._drop = (match, count)

    def stop_dropping(self) -> None:
        with self._lock:
            self._drop = None

    def cut_next_publish_from_client(self, topic_contains: str) -> None:
        """When the client next publishes to a topic containing this text, forward half of
        that packet, then close both connections."""
        with self._lock:
            self._cut = topic_contains

    def cut_after_connack(self, count: int) -> None:
        """The next `count` connections are closed right after the broker's CONNACK reached
        the client (a flaky NAT or proxy does this)."""
        with self._lock:
            self._cut_connack = count

    def drop_connections(self) -> int:
        """Close every connection now (a NAT that forgets its table); how many there were."""
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            _close(s)
        return len(socks) // 2

    # -- plumbing ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((self.host, self.port))
        srv.listen(8)
        self._server = srv
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()
        for s in list(self._socks):
            _close(s)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            up.settimeout(None)
            self.connections += 1
            self._socks += [client, up]
            threading.Thread(target=self._pump, args=(client, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        buf = bytearray()
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                buf += data
                while True:
                    n = packet_length(buf)
                    if n is None:
                        break
                    packet = bytes(buf[:n])
                    del buf[:n]
                    if not self._forward(packet, dst, from_client):
                        _close(src)
                        _close(dst)
                        return
        except (OSError, ValueError):
            pass
        _close(src)
        _close(dst)

    def _forward(self, packet: bytes, dst: socket.socket, from_client: bool) -> bool:
        topic = publish_topic(packet)
        with self._lock:
            if not from_client and packet[0] == 0x20 and self._cut_connack > 0:
                self._cut_connack -= 1
                self.connack_cuts += 1
                dst.sendall(packet)
                return False
            if from_client and topic is not None and self._cut and self._cut in topic:
                self._cut = None
                self.cuts += 1
                dst.sendall(packet[: max(2, len(packet) // 2)])
                return False
            if not from_client and topic is not None and self._drop is not None:
                match, count = self._drop
                if match(topic):
                    self.dropped.append(topic)
                    self._drop = (match, count - 1) if count > 1 else None
                    return True
        dst.sendall(packet)
        return True


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
