"""The bench rig's I/O driver against the rig I/O board's own command handling, behind a pty
(a stand-in for the board's USB serial): commands, refusals, timestamped door outputs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from hil.bench import RigIOBoard
from hil.board import rig_io
from hil.rig import RigError


class Pin:
    def __init__(self) -> None:
        self.v = 0

    def value(self, v: int) -> None:
        self.v = v


@pytest.fixture()
def board() -> Iterator[RigIOBoard]:
    """A fake board: the real command handler; a 'door' whose relay follows the REX input."""
    master, slave = os.openpty()
    pins = {n: Pin() for n in list(rig_io.DRIVE) + list(rig_io.CONTACT)}
    state = {"rex": "0", "tamper": "0", "fire": "0", "power": "0", "contact": "closed"}
    stop = threading.Event()

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
                answer = rig_io.handle(line.decode().strip(), pins, state)
                os.write(master, (answer + "\n").encode())
                if line.startswith(b"set rex 1"):
                    os.write(master, b"out relay 1 %d\n" % int(time.monotonic() * 1e6))

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
