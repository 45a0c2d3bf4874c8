"""Power drivers: the virtual device's process (a power cut is SIGKILL; the flash simulator
keeps exactly what was written), or the bench's power relay on the rig I/O board."""

from __future__ import annotations

import time

from hil.drivers.io import RigIOBoard
from hil.rig import RigError
from host_tools.vdev.device import VirtualDevice

POWER_OFF_S = 0.5  # how long a bench power cycle leaves the door without power


class DevicePower:
    def __init__(self, dev: VirtualDevice) -> None:
        self.dev = dev

    def on(self) -> None:
        if not self.dev.alive():
            self.dev.restart()

    def off(self) -> None:
        self.dev.kill()

    def cycle(self) -> None:
        self.dev.restart()

    def close(self) -> None:
        self.dev.stop()


class BoardPower:
    def __init__(self, board: RigIOBoard) -> None:
        self.board = board

    def on(self) -> None:
        self.board.power(True)

    def off(self) -> None:
        self.board.power(False)

    def cycle(self) -> None:
        self.board.power(False)
        time.sleep(POWER_OFF_S)
        self.board.power(True)

    def close(self) -> None:
        """The door left unpowered (the board may already be gone)."""
        try:
            self.board.power(False)
        except RigError:
            pass
