"""The door's console on a bench: its USB serial port, driven with the real mpremote through
host_tools/console.py, for commissioning (host_tools.vdev.provision: the same atomic file
writes `doorctl commission` uses), its status, and the journal wipe that makes a freshly
commissioned door."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from hil.rig import RigError
from host_tools import console
from host_tools.errors import UserError
from host_tools.vdev import provision


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
