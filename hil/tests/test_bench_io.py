"""The bench rig's I/O driver against the rig I/O board's own command handling, behind a pty
(a stand-in for the board's USB serial): commands, refusals, timestamped door outputs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from hil.board import rig_io
from hil.drivers.io import BoardIO, RigIOBoard
from hil.rig import RigError


class Pin:
    def __init__(self) -> None:
        self.v = 0

    def value(self, v: int) -> None:
        self.v = v


class Clock:
    """The board's ticks_us: 1 ms per reading, starting `start` µs before it wraps."""

    def __init__(self, start: int = 5_000) -> None:
        self.t = (1 << 30) - start

    def now(self) -> int:
        self.t = (self.t + 1000) % (1 << 30)
        return self.t


@pytest.fixture()
def board() -> Iterator[RigIOBoard]:
    """A fake board: the real command handler; a 'door' whose relay follows the REX input."""
    master, slave = os.openpty()
    pins = {n: Pin() for n in list(rig_io.DRIVE) + list(rig_io.CONTACT)}
    state = {"rex": "0", "tamper": "0", "fire": "0", "power": "0", "contact": "closed"}
    stop = threading.Event()
    clock = Clock()

    def serve() -> None:
        buf = b""
        while not stop.is_set():
            try:
                data = os.read(master, 256)
            except OSError:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                answer = rig_io.answer(line.decode().strip(), pins, state, clock.now)
                os.write(master, (answer + "\n").encode())
                if line.startswith(b"set rex 1"):
                    os.write(master, b"out relay 1 %d\n" % clock.now())
                if line.startswith(b"set fire 1"):  # a 'door' that turns both LED lines on
                    os.write(master, b"out led_green 1 %d\nout led_red 1 %d\n"
                             % (clock.now(), clock.now()))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    b = RigIOBoard(os.ttyname(slave))
    yield b
    b.close()
    stop.set()
    os.close(master)
    os.close(slave)


def test_inputs_are_driven_and_outputs_seen_with_timestamps(board: RigIOBoard) -> None:
    t0 = time.monotonic()
    board.set_input("rex", True)
    change = board.wait_output("relay", 1, timeout_s=5, after=t0)
    assert change.host_s >= t0 and change.board_us > 0
    board.set_input("contact", "cut")
    board.power(True)
    assert board.command("get") == "state contact=cut fire=0 power=1 rex=1 tamper=0"


def test_refusals_and_silence_are_clear_errors(board: RigIOBoard) -> None:
    with pytest.raises(RigError, match="refused 'set contact ajar': contact must be"):
        board.set_input("contact", "ajar")
    with pytest.raises(RigError, match="buzzer did not become 1"):
        board.wait_output("buzzer", 1, timeout_s=0.3)


def test_a_missing_board_port() -> None:
    with pytest.raises(RigError, match="rig I/O board on /dev/ttyACM9"):
        RigIOBoard("/dev/ttyACM9")


def test_the_board_clock_is_given_with_each_change_and_unwrapped(board: RigIOBoard) -> None:
    times = [board.set_input("tamper", i % 2) for i in range(8)]  # the clock wraps meanwhile
    assert times == sorted(times) and times[-1] - times[0] == 7 * 1000
    assert times[-1] > 1 << 30


def test_the_door_io_in_the_suites_terms(board: RigIOBoard) -> None:
    io = BoardIO(board)
    assert io.current("relay") is False and io.current("led") == "off"
    mark = io.set_input("rex", True)
    on = io.wait_output("relay", True, timeout_s=5, after_ms=mark)
    assert on.device_ms > mark and on.name == "relay"
    io.set_input("fire", True)  # both LED lines switch together: one colour change, amber
    assert io.wait_output("led", "amber", timeout_s=5).device_ms > on.device_ms
    assert [o.value for o in io.outputs("led")] == ["amber"]
    assert io.set_input("door_contact", "open") > mark
    with pytest.raises(RigError, match="drives no door input 'power'"):
        io.set_input("power", False)
    with pytest.raises(RigError, match="buzzer to become True"):
        io.wait_output("buzzer", True, timeout_s=0.2)
