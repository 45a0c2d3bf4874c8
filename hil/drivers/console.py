"""Console drivers: commissioning (host_tools.vdev.provision: the same atomic file writes
`doorctl commission` uses), the firmware's status, a reset, and a door with an empty journal.

- `DeviceConsole` (virtual rig): the virtual device's pty for commissioning; its status over
  the I/O channel (no console program beside the firmware on every poll).
- `DutConsole` (bench): the door's USB serial port, driven with the real mpremote through
  host_tools/console.py; the journal wipe that makes a board used before a fresh door."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from hil.drivers.io import DeviceIO
from hil.rig import RigError
from host_tools import console
from host_tools.errors import UserError
from host_tools.vdev import provision
from host_tools.vdev.device import VirtualDevice


class DeviceConsole:
    def __init__(self, dev: VirtualDevice, io: DeviceIO) -> None:
        self.dev = dev
        self.io = io

    def wait_up(self) -> None:
        """The device's own start waits for its boot."""

    def status(self) -> dict[str, Any]:
        return self.io.status()

    def reset(self) -> None:
        """The firmware stopped and started again, without a power cut (a new console pty)."""
        self.dev.stop()
        self.dev.start()

    def provision(self, config: dict[str, Any], keys: dict[str, Any], cache: bytes) -> None:
        provision.provision(self.dev.pty, config=config, keys=keys, cache=cache)

    def wipe_journal(self, power_off: Callable[[], None]) -> None:
        """A new virtual door's journal is empty already: only the power goes off."""
        power_off()

    def close(self) -> None:
        pass


class DutConsole:
    def __init__(self, port: str) -> None:
        self.port = port

    def run(self, program: str, timeout: float = 30.0) -> str:
        """A console program that needs no firmware (a reset, a file read)."""
        try:
            return console.mpremote(self.port, "exec", program, timeout=timeout)
        except UserError as e:
            raise RigError(f"the door's console: {e}") from None

    def call(self, name: str, *args: console.CallArg, timeout: float = 30.0) -> Any:
        """A named console call (firmware/console.py) on the door; its answer."""
        try:
            return console.call(self.port, name, *args, timeout=timeout)
        except UserError as e:
            raise RigError(f"the door's console: {e}") from None

    def wait_up(self, timeout: float = 60.0) -> None:
        """Until the firmware answers on the console (after power-up)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if "ready" in self.status():
                    return
            except RigError as e:
                if time.monotonic() > deadline:
                    raise RigError(f"the door did not come up on {self.port} within "
                                   f"{timeout:.0f} s: {e}") from None
            time.sleep(0.3)

    def status(self) -> dict[str, Any]:
        """The firmware's own status, read over the console."""
        return dict(self.call("status", timeout=15))

    def provision(self, config: dict[str, Any], keys: dict[str, Any], cache: bytes) -> None:
        try:
            provision.provision(self.port, config=config, keys=keys, cache=cache)
        except UserError as e:
            raise RigError(f"commissioning the door on {self.port}: {e}") from None

    def reset(self) -> None:
        self.run("import machine\nmachine.reset()", timeout=5)

    def wipe_journal(self, power_off: Callable[[], None]) -> None:
        """Erase the journal while a console call holds the firmware still, and cut the power
        before it can write again: the next boot starts at seq 1."""
        held = self.hold_wiped()
        try:
            power_off()
        finally:
            held.kill()
            held.wait()

    def close(self) -> None:
        pass

    def hold_wiped(self, timeout: float = 60.0) -> subprocess.Popen[str]:
        """Erase the journal and hold the firmware still; returns the console process, to be
        ended once the door's power is cut."""
        try:
            proc = console.open_call(self.port, "wipe_journal")
        except UserError as e:
            raise RigError(f"the door's console: {e}") from None
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        seen = []
        for line in proc.stdout:
            seen.append(line.strip())
            if line.startswith("CALL "):
                return proc
            if time.monotonic() > deadline:
                break
        proc.kill()
        proc.wait()
        raise RigError(f"the door's journal could not be erased over {self.port}: "
                       f"{' '.join(seen)[-300:] or 'no answer'}")
