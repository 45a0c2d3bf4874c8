"""Client of the virtual device's door I/O channel (JSON lines on loopback TCP).

Drives inputs (door contact, REX, tamper, fire, power) and records every output change
(relay, buzzer, LED) with the device's timestamp and the host's receive time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from host_tools import tcp

INPUTS = ("door_contact", "rex", "tamper", "fire", "power")
OUTPUTS = ("relay", "buzzer", "led")


class IOChannelError(RuntimeError):
    """The device refused a request or the channel closed."""


@dataclass(frozen=True)
class IOEvent:
    kind: str  # "out" (an output changed) or "in" (an input was set)
    name: str
    value: Any
    device_ms: int  # the device's ticks_ms when it happened
    host_s: float  # time.monotonic() on the host when it arrived


class VirtualIO:
    def __init__(self, addr: tuple[str, int], timeout_s: float = 5.0) -> None:
        """Connect, retrying for up to `timeout_s` while the device (re)boots.

        The channel closes when the device resets or loses power; connect a new VirtualIO
        to the same address once it is back (`VirtualDevice.wait_ready()`).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._sock = tcp.connect(addr, timeout=timeout_s)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise IOChannelError(f"nothing listens on {addr[0]}:{addr[1]}: "
                                         "start the virtual device first") from None
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._file = self._sock.makefile("rb")
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._events: list[IOEvent] = []
        self._replies: list[dict[str, Any]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._file:
                msg = json.loads(line)
                with self._cond:
                    if msg.get("re"):
                        self._replies.append(msg)
                    else:
                        self._events.append(IOEvent(msg["ev"], msg["name"], msg["value"],
                                                    int(msg["t"]), time.monotonic()))
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def request(self, msg: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
        with self._lock:
            with self._cond:
                self._replies.clear()
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
            with self._cond:
                if not self._cond.wait_for(lambda: self._replies or self._closed, timeout_s):
                    raise IOChannelError("the virtual device did not answer")
                if not self._replies:
                    raise IOChannelError("the I/O channel closed")
                reply = self._replies.pop(0)
        if not reply.get("ok"):
            raise IOChannelError(str(reply.get("error", "refused")))
        return reply

    def set_input(self, name: str, value: Any) -> int:
        """Set an input; returns the device's ticks_ms at which it took effect."""
        return int(self.request({"op": "set", "name": name, "value": value})["t"])

    def state(self) -> dict[str, Any]:
        return self.request({"op": "get"})

    def status(self, *keys: str) -> dict[str, Any]:
        """The firmware's status report; with `keys`, only those entries (those it has)."""
        msg: dict[str, Any] = {"op": "status"}
        if keys:
            msg["keys"] = list(keys)
        return dict(self.request(msg)["status"])

    def events(self) -> list[IOEvent]:
        with self._cond:
            return list(self._events)

    def outputs(self, name: str | None = None) -> list[IOEvent]:
        return [e for e in self.events() if e.kind == "out" and (name is None or e.name == name)]

    def wait_output(self, name: str, value: Any, timeout_s: float = 10.0,
                    after_ms: float | None = None) -> IOEvent:
        """The first change of output `name` to `value` (after device time `after_ms`)."""
        def find() -> IOEvent | None:
            for e in self._events:
                if e.kind == "out" and e.name == name and e.value == value and (
                        after_ms is None or e.device_ms >= after_ms):
                    return e
            return None

        with self._cond:
            self._cond.wait_for(lambda: find() is not None or self._closed, timeout_s)
            found = find()
        if found is None:
            raise IOChannelError(f"{name} did not become {value!r} within {timeout_s} s")
        return found

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def __enter__(self) -> VirtualIO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
