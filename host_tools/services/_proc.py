"""What the service launchers share: free ports, waiting for a port, running as a service user."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from pathlib import Path


class ServiceError(RuntimeError):
    """A server is missing or did not start; the message says which and why."""


def free_port() -> int:
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
