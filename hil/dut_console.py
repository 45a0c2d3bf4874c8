"""The door's console on a bench: its USB serial port, driven with the real mpremote through
host_tools/console.py, for commissioning (host_tools.vdev.provision: the same atomic file
writes `doorctl commission` uses), its status, and the journal wipe that makes a freshly
commissioned door."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from hil.rig import RigError
from host_tools import console
from host_tools.errors import UserError
from host_tools.vdev import provision

STATUS = "import json\nfrom firmware.main import status\nprint('STATUS ' + json.dumps(status))"

# Erase the journal's raw partition (block protocol: ioctl 4 = block count, 6 = erase), then keep
# the console busy, which keeps the firmware's loop (and so its journal) still until the power
# goes: the next boot finds an empty journal, as on a new board.
WIPE = """
import time
from firmware.main import running
d = running['board'].journal_dev
for b in range(d.ioctl(4, 0)):
    d.ioctl(6, b)
print('WIPED')
while True:
    time.sleep_ms(50)
"""


class DutConsole:
    def __init__(self, port: str) -> None:
        self.port = port

    def run(self, program: str, timeout: float = 30.0) -> str:
        try:
            return console.mpremote(self.port, "exec", program, timeout=timeout)
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
        """The firmware's own status (firmware.main.status), read over the console."""
        for line in self.run(STATUS, timeout=15).splitlines():
            if line.startswith("STATUS "):
                return dict(json.loads(line[7:]))
        raise RigError(f"the door's console on {self.port} gave no status (is the firmware running?)")

    def provision(self, config: dict[str, Any], keys: dict[str, Any], cache: bytes) -> None:
        try:
            provision.provision(self.port, config=config, keys=keys, cache=cache)
        except UserError as e:
            raise RigError(f"commissioning the door on {self.port}: {e}") from None

    def hold_wiped(self, timeout: float = 60.0) -> subprocess.Popen[str]:
        """Erase the journal and hold the firmware still; returns the console process, to be
        ended once the door's power is cut."""
        try:
            proc = console.open_exec(self.port, WIPE)
        except UserError as e:
            raise RigError(f"the door's console: {e}") from None
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        seen = []
        for line in proc.stdout:
            seen.append(line.strip())
            if line.strip() == "WIPED":
                return proc
            if time.monotonic() > deadline:
                break
        proc.kill()
        proc.wait()
        raise RigError(f"the door's journal could not be erased over {self.port}: "
                       f"{' '.join(seen)[-300:] or 'no answer'}")
