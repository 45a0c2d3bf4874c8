"""TCP for request/response byte protocols (the reader link, the I/O channel).

Without TCP_NODELAY a small write that follows another unacknowledged one waits for the
peer's delayed ACK (Nagle): about 40 ms per exchange on Linux loopback, which once made the
virtual door's card figures ten times slower than the door itself.
"""

from __future__ import annotations

import socket


def no_delay(sock: socket.socket) -> socket.socket:
    """Send every write at once; a socket that is not TCP (a socketpair) is left as it is."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect(addr: tuple[str, int], timeout: float | None) -> socket.socket:
    """`socket.create_connection` with TCP_NODELAY set."""
    return no_delay(socket.create_connection(addr, timeout=timeout))
