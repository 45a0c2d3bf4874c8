"""The bench rig's I/O driver: the rig I/O board (hil/board/rig_io.py) over USB serial drives
the door's inputs and reports its outputs with the board's microsecond timestamps."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from hil.rig import RigError

INPUT_VALUES = {True: "1", False: "0"}


@dataclass
class OutputChange:
    name: str
    value: int
    board_us: int
    host_s: float


class RigIOBoard:
    def __init__(self, port: str, timeout_s: float = 2.0) -> None:
        import serial

        try:
            self.link: Any = serial.Serial(port, 115200, timeout=0.05)
        except (OSError, serial.SerialException) as e:
            raise RigError(f"rig I/O board on {port}: {e}") from None
        self.port = port
        self.timeout_s = timeout_s
        self.changes: list[OutputChange] = []
        self._answers: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

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
                        self.changes.append(OutputChange(parts[1], int(parts[2]), int(parts[3]),
                                                         time.monotonic()))
                    elif line:
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

    def set_input(self, name: str, value: Any) -> None:
        """rex / tamper / fire: bool; contact: closed / open / short / cut."""
        v = value if name == "contact" else INPUT_VALUES[bool(value)]
        self.command(f"set {name} {v}")

    def power(self, on: bool) -> None:
        self.command(f"power {INPUT_VALUES[on]}")

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

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.link.close()
