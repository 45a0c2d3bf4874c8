"""Request/response links send each write at once (TCP_NODELAY): the PN532 emulator's reader
link and the virtual device's I/O channel. With Nagle, an ACK frame followed by the response
waited ~40 ms for a delayed ACK on every exchange (`card.decision_ms` 296 ms instead of 25)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from host_tools import tcp
from host_tools.pn532_emu import PN532Emulator
from host_tools.vdev.io_client import VirtualIO


def nodelay(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        yield srv


def test_connect_sets_nodelay_and_leaves_other_sockets_alone(listener: socket.socket) -> None:
    with tcp.connect(listener.getsockname(), timeout=2) as s:
        assert nodelay(s)
    a, b = socket.socketpair()
    with a, b:
        assert tcp.no_delay(a) is a  # a Unix socket has no Nagle: nothing to set, no error


def test_the_emulators_reader_link_sends_at_once(listener: socket.socket) -> None:
    link = PN532Emulator().connect(listener.getsockname())
    try:
        assert isinstance(link.sock, socket.socket) and nodelay(link.sock)
    finally:
        link.close()


def test_the_io_channel_sends_at_once(listener: socket.socket) -> None:
    io = VirtualIO(listener.getsockname())
    try:
        assert nodelay(io._sock)
    finally:
        io.close()
