"""I/O drivers: the door's inputs and outputs in the suite's rig-neutral terms (`hil.rig.DoorIO`:
`door_contact`, `rex`, … in; `relay`, `buzzer`, `led` out, each change timed on the rig's clock).

- `DeviceIO` (virtual rig): the virtual device's I/O channel (host_tools/vdev/io_client.py),
  timed on the device's ticks; made again after every power cycle.
- `BoardIO` (bench): the rig I/O board (hil/board/rig_io.py) over USB serial, timed on the
  board's microsecond clock; `RigIOBoard` speaks the board's protocol (it also drives the
  door's power relay: hil/drivers/power.py)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from hil.rig import RigError, wait_for
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import IOEvent, VirtualIO

INPUT_VALUES = {True: "1", False: "0"}
TICKS_PERIOD_US = 1 << 30  # MicroPython's ticks_us wraps here (about 17.9 minutes)
LED = {(0, 0): "off", (1, 0): "green", (0, 1): "red", (1, 1): "amber"}
# The door switches its two LED lines one after the other: two changes this close are one
# colour change (amber to off is not a red flash in between).
LED_SETTLE_US = 2000


@dataclass
class OutputChange:
    name: str
    value: int
    board_us: int  # the board's ticks_us, unwrapped: it only grows while the driver runs
    host_s: float


class RigIOBoard:
    def __init__(self, port: str, timeout_s: float = 2.0) -> None:
        import serial

        try:
            self.link: Any = serial.Serial(port, 115200, timeout=0.05)
        except (OSError, serial.SerialException) as e:
            raise RigError(f"rig I/O board on {port}: {e}") from None
        self.link.reset_input_buffer()  # what the board said while nobody listened is stale
        self.port = port
        self.timeout_s = timeout_s
        self.changes: list[OutputChange] = []
        self._answers: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._wraps = 0
        self._last_us: int | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _unwrap(self, raw: int) -> int:
        """The board's ticks_us wrap; the board prints them in order, so a big step back is a
        wrap. (A silence longer than a whole period would be missed: the board prints a time on
        every command, and the suite talks to it every few seconds.)"""
        if self._last_us is not None and raw < self._last_us - TICKS_PERIOD_US // 2:
            self._wraps += 1
        self._last_us = raw
        return raw + self._wraps * TICKS_PERIOD_US

    def _read(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                data = self.link.read(256)
            except Exception:
                return
            buf += data
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode(errors="replace").strip()
                with self._cond:
                    parts = line.split()
                    if parts[:1] == ["out"] and len(parts) == 4:
                        self.changes.append(OutputChange(parts[1], int(parts[2]),
                                                         self._unwrap(int(parts[3])),
                                                         time.monotonic()))
                    elif line:
                        if parts[:1] == ["ok"] and len(parts) == 2 and parts[1].isdigit():
                            line = f"ok {self._unwrap(int(parts[1]))}"
                        self._answers.append(line)
                    self._cond.notify_all()

    def command(self, line: str) -> str:
        with self._cond:
            self._answers.clear()
        self.link.write(line.encode() + b"\n")
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._answers), self.timeout_s):
                raise RigError(f"the rig I/O board on {self.port} does not answer "
                               "(is hil/board/rig_io.py its main.py?)")
            answer = self._answers.pop(0)
        if answer.startswith("err"):
            raise RigError(f"rig I/O board refused {line!r}: {answer[4:]}")
        return answer

    def _timed(self, line: str) -> int:
        answer = self.command(line).split()
        if len(answer) != 2 or not answer[1].isdigit():
            raise RigError(f"the rig I/O board answered {' '.join(answer)!r} to {line!r} without "
                           "its clock: put the current hil/board/rig_io.py on it")
        return int(answer[1])

    def set_input(self, name: str, value: Any) -> int:
        """rex / tamper / fire: bool; contact: closed / open / short / cut. Returns the board's
        (unwrapped) ticks_us when it was applied."""
        v = value if name == "contact" else INPUT_VALUES[bool(value)]
        return self._timed(f"set {name} {v}")

    def power(self, on: bool) -> int:
        return self._timed(f"power {INPUT_VALUES[on]}")

    def levels(self) -> dict[str, int]:
        """Each door output's level, as the board reads it now."""
        state = self.command("get").split()[1:]
        return {k[4:]: int(v) for k, _, v in (p.partition("=") for p in state)
                if k.startswith("out_")}

    def wait_output(self, name: str, value: int, timeout_s: float = 10.0,
                    after: float = 0.0) -> OutputChange:
        """The first change of a door output to `value` seen after host time `after`."""
        def find() -> OutputChange | None:
            return next((c for c in self.changes if c.name == name and c.value == value
                         and c.host_s >= after), None)
        with self._cond:
            if not self._cond.wait_for(lambda: find() is not None, timeout_s):
                raise RigError(f"the door's {name} did not become {value} within {timeout_s} s")
            found = find()
        assert found is not None
        return found

    def snapshot(self) -> list[OutputChange]:
        with self._cond:
            return list(self.changes)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.link.close()


@dataclass(frozen=True)
class DoorOutput:
    """A door output's change in the suite's terms (`hil.rig.OutputChange`)."""

    name: str  # relay, buzzer, led
    value: Any  # relay, buzzer: bool; led: off, green, red, amber
    device_ms: float  # the I/O board's clock
    host_s: float


BOARD_INPUTS = {"door_contact": "contact", "rex": "rex", "tamper": "tamper", "fire": "fire"}


class BoardIO:
    """The door's I/O through the rig I/O board, in the suite's terms (`hil.rig.DoorIO`)."""

    rig_clock_timings = True  # the board's µs clock: no serial latency in the card timings

    def __init__(self, board: RigIOBoard) -> None:
        self.board = board
        self._skip = len(board.snapshot())  # changes from before: in the levels read next
        self.start = board.levels()  # the outputs' levels when the driver started

    def set_input(self, name: str, value: Any) -> float:
        if name not in BOARD_INPUTS:
            raise RigError(f"the rig I/O board drives no door input {name!r} "
                           f"(it drives {', '.join(BOARD_INPUTS)})")
        return self.board.set_input(BOARD_INPUTS[name], value) / 1000

    def outputs(self, name: str | None = None) -> list[DoorOutput]:
        """Every output change seen, in order; the two LED lines make one `led` colour."""
        level = dict(self.start)
        out = []
        changes = self.board.snapshot()[self._skip:]
        for i, c in enumerate(changes):
            level[c.name] = c.value
            if c.name in ("led_green", "led_red"):
                nxt = changes[i + 1] if i + 1 < len(changes) else None
                if (nxt is not None and nxt.name in ("led_green", "led_red") and nxt.name != c.name
                        and nxt.board_us - c.board_us < LED_SETTLE_US):
                    continue  # the other line follows at once: one change, reported with it
                colour = LED[(level.get("led_green", 0), level.get("led_red", 0))]
                out.append(DoorOutput("led", colour, c.board_us / 1000, c.host_s))
            else:
                out.append(DoorOutput(c.name, bool(c.value), c.board_us / 1000, c.host_s))
        return [o for o in out if name is None or o.name == name]

    def current(self, name: str) -> Any:
        """An output's value now (its last change, else its level when the driver started)."""
        seen = self.outputs(name)
        if seen:
            return seen[-1].value
        if name == "led":
            return LED[(self.start.get("led_green", 0), self.start.get("led_red", 0))]
        return bool(self.start.get(name, 0))

    def wait_output(self, name: str, value: Any, timeout_s: float = 10.0,
                    after_ms: float | None = None) -> DoorOutput:
        def find() -> DoorOutput | None:
            return next((o for o in self.outputs(name) if o.value == value
                         and (after_ms is None or o.device_ms >= after_ms)), None)
        try:
            found: DoorOutput = wait_for(find, timeout_s, f"the door's {name} to become {value!r}")
        except AssertionError as e:
            raise RigError(str(e)) from None
        return found

    def connect(self) -> None:
        """The board stays connected across the door's power cycles."""

    def disconnect(self) -> None:
        pass

    def close(self) -> None:
        pass  # the board is closed by its owner, after the power driver switched the door off


class DeviceIO:
    """The virtual device's I/O channel, made again after each boot (`connect`)."""

    rig_clock_timings = False  # card timings on the host's clock, as the figures always were

    def __init__(self, dev: VirtualDevice) -> None:
        self.dev = dev
        self._channel: VirtualIO | None = None

    @property
    def channel(self) -> VirtualIO:
        if self._channel is None:
            raise RigError("the virtual door's I/O channel is not connected (the door is off)")
        return self._channel

    def connect(self) -> None:
        self._channel = VirtualIO(self.dev.io_addr)

    def disconnect(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def close(self) -> None:
        self.disconnect()

    def set_input(self, name: str, value: Any) -> float:
        return self.channel.set_input(name, value)

    def state(self) -> dict[str, Any]:
        return self.channel.state()

    def status(self) -> dict[str, Any]:
        return self.channel.status()

    def outputs(self, name: str | None = None) -> list[IOEvent]:
        return self.channel.outputs(name)

    def current(self, name: str) -> Any:
        return self.state()["outputs"].get(name)

    def wait_output(self, name: str, value: Any, timeout_s: float = 10.0,
                    after_ms: float | None = None) -> IOEvent:
        return self.channel.wait_output(name, value, timeout_s, after_ms)
