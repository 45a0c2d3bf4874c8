"""What the service launchers share: free ports, waiting for a port, running as a service user."""

from __future__ import annotations

import os
import pwd
import random
import socket
import subprocess
import time
from pathlib import Path


class ServiceError(RuntimeError):
    """A server is missing or did not start; the message says which and why."""


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def bindable(port: int) -> bool:
    """A server can listen on `port` on the loopback as ours do (SO_REUSEADDR, as asyncio's
    start_server and mosquitto set it: a closed connection's TIME_WAIT does not count, another
    process's listener or connection does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port for a server of ours, below the kernel's ephemeral range: an outgoing connection
    anywhere on the machine never takes it as its local port, so a server restarted on it (a
    door's power cut) finds it free again. Falls back to one the kernel picks."""
    low = _ephemeral_low()
    if low > 11024:
        for _ in range(100):
            port = random.randint(low - 10000, low - 1)
            if bindable(port):
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float, what: str,
                   log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{what} exited: {tail(log)}")
        if listening(port):
            return
        time.sleep(0.1)
    raise ServiceError(f"{what} did not listen on port {port} within {timeout_s:.0f} s: {tail(log)}")


def tail(path: Path, n: int = 400) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip() or "(no output)"
    except OSError:
        return "(no log)"


def as_user(user: str) -> list[str]:
    """The prefix that runs a command as `user` when we are root (servers refuse root or
    belong to their own user); nothing when we are not."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(user)
    except KeyError:
        return []
    return ["runuser", "-u", user, "--"]


def give_to(user: str, *paths: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return
    for top in paths:
        for dirpath, _dirs, files in os.walk(top):
            os.chown(dirpath, entry.pw_uid, entry.pw_gid)
            for f in files:
                os.chown(os.path.join(dirpath, f), entry.pw_uid, entry.pw_gid)
