"""The loopback bench's wiring: the rig I/O board's pins (its firmware running in the unix port
with hil/board/loopback/machine.py) wired to the virtual device's door I/O channel, as the
bench's relays and optocouplers wire a Pico to a board (docs/hil.md, Wiring).

    board GP2/3/4 (rex, tamper, fire relays)  -> the device's inputs rex, tamper, fire
    board GP6+GP7 (contact loop relays)        -> door_contact closed / open / short / cut
    board GP5 (DUT power relay)                -> the device's process: 0 = SIGKILL, 1 = boot
    device relay, buzzer, led                  -> board GP10, GP11, GP12 (green) + GP13 (red)

Test equipment only: nothing in the product imports it.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
from typing import Any

from hil.board import rig_io
from host_tools import tcp
from host_tools.services import free_port
from host_tools.vdev.device import VirtualDevice

DRIVEN = {gp: name for name, gp in rig_io.DRIVE.items() if name != "power"}
POWER = rig_io.DRIVE["power"]
LOOP = (rig_io.CONTACT["loop_open"], rig_io.CONTACT["loop_short"])
CONTACT = {pins: state for state, pins in rig_io.CONTACT_RELAYS.items()}
WATCH = rig_io.WATCH


def output_pins(name: str, value: Any) -> dict[int, int]:
    """The board pins a device output drives: relay and buzzer one each, the LED two."""
    if name == "led":
        return {WATCH["led_green"]: int(value in ("green", "amber")),
                WATCH["led_red"]: int(value in ("red", "amber"))}
    if name in ("relay", "buzzer"):
        return {WATCH[name]: int(bool(value))}
    return {}


class Wiring:
    """Serves the board's pin link (`port`) and keeps the device's I/O channel connected
    while the board's power relay is on."""

    def __init__(self, dev: VirtualDevice) -> None:
        self.dev = dev
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._board: socket.socket | None = None
        self._device: socket.socket | None = None
        self.drive: dict[int, int] = {}  # board output pins as the board last drove them
        self._levels: dict[int, int] = {}  # board input pins as last sent
        self._power: queue.Queue[int | None] = queue.Queue()
        self.powered = threading.Event()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True)
                         for f in (self._serve_board, self._power_worker, self._device_link)]
        for t in self._threads:
            t.start()

    # -- the board's side -------------------------------------------------------------------
    def _serve_board(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._board = tcp.no_delay(conn)
            with self._lock:
                self._levels = {}
            self._refresh_outputs({})
            buf = b""
            while not self._stop.is_set():
                try:
                    data = conn.recv(256)
                except OSError:
                    break
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    parts = line.split()
                    if len(parts) == 3 and parts[0] == b"w":
                        self._driven(int(parts[1]), int(parts[2]))
            self._board = None

    def _driven(self, gp: int, v: int) -> None:
        self.drive[gp] = v
        if gp == POWER:
            self._power.put(v)
        elif gp in LOOP:
            self._set("door_contact", CONTACT[(self.drive.get(LOOP[0], 0), self.drive.get(LOOP[1], 0))])
        elif gp in DRIVEN:
            self._set(DRIVEN[gp], bool(v))

    def _send_levels(self, pins: dict[int, int]) -> None:
        with self._lock:
            changed = {gp: v for gp, v in pins.items() if self._levels.get(gp, 0) != v}
            self._levels.update(changed)
            board = self._board
            if board is not None and changed:
                try:
                    board.sendall(b"".join(b"r %d %d\n" % kv for kv in changed.items()))
                except OSError:
                    pass

    def _refresh_outputs(self, outputs: dict[str, Any]) -> None:
        """All door outputs at once: those named, the others off (an unpowered door)."""
        pins = {gp: 0 for gp in WATCH.values()}
        for name, value in outputs.items():
            pins.update(output_pins(name, value))
        self._send_levels(pins)

    # -- the DUT's power relay ------------------------------------------------------------
    def _power_worker(self) -> None:
        while True:
            v = self._power.get()
            if v is None:
                return
            if v and not self.powered.is_set():
                self.powered.set()
                try:
                    self.dev.restart()
                except Exception as e:  # noted; the bench driver sees a door that never comes up
                    self.errors.append(f"boot: {e}")
            elif not v and self.powered.is_set():
                self.powered.clear()
                self.dev.kill()
                self._refresh_outputs({})

    # -- the device's side ------------------------------------------------------------------
    def _set(self, name: str, value: Any) -> None:
        dev = self._device
        if dev is not None:
            try:
                dev.sendall(json.dumps({"op": "set", "name": name, "value": value}).encode() + b"\n")
            except OSError:
                pass

    def _device_link(self) -> None:
        while not self._stop.is_set():
            if not self.powered.is_set():
                self._stop.wait(0.05)
                continue
            try:
                sock = tcp.connect(self.dev.io_addr, timeout=0.5)
            except OSError:
                self._stop.wait(0.05)
                continue
            sock.settimeout(None)
            self._device = sock
            # The rig's relays hold their state across the door's reboot: apply them again.
            for gp, name in DRIVEN.items():
                if self.drive.get(gp):
                    self._set(name, True)
            if any(self.drive.get(gp) for gp in LOOP):
                self._set("door_contact", CONTACT[(self.drive.get(LOOP[0], 0), self.drive.get(LOOP[1], 0))])
            sock.sendall(b'{"op": "get"}\n')
            try:
                for line in sock.makefile("rb"):
                    msg = json.loads(line)
                    if msg.get("ev") == "out":
                        self._send_levels(output_pins(msg["name"], msg["value"]))
                    elif msg.get("re") and "outputs" in msg:
                        self._refresh_outputs(msg["outputs"])
                    elif msg.get("re") and not msg.get("ok"):
                        self.errors.append(str(msg.get("error")))
            except (OSError, ValueError):
                pass
            self._device = None
            sock.close()
            self._refresh_outputs({})  # the door reset or lost its power: its outputs drop

    def close(self) -> None:
        self._stop.set()
        self._power.put(None)
        for s in (self._server, self._board, self._device):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        for t in self._threads:
            t.join(5)
