"""A firmware that stops (a task raised: the door machine found no heap even to restart, the
card task starved for a minute) reboots the virtual door, as the ESP32 reference board resets
(board/esp32_ref.py run): it used to leave it in console-only safe mode, a door that decided
no card again until someone restarted it. A simulated power cut still leaves it off."""

from __future__ import annotations

import time
from pathlib import Path

from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import mpremote

BREAK_THE_DOOR = "from firmware.main import running\nrunning['door']._broken = True"


def test_a_firmware_that_stops_reboots_the_door_instead_of_leaving_it_to_its_console(
        tmp_path: Path) -> None:
    with VirtualDevice(tmp_path / "door") as dev:
        boots = dev.boots
        # The door task's next poll raises (its machine could not be made again): it ends,
        # and with it the firmware.
        mpremote(dev.pty, "exec", BREAK_THE_DOOR)
        deadline = time.monotonic() + 20
        while dev.boots == boots and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dev.boots == boots + 1, "the door did not reboot"
        dev.wait_ready()
        with VirtualIO(dev.io_addr) as io:
            st = io.status()
        assert st["ready"] is True and not st.get("safe_mode"), st
        err = (dev.state_dir / "stderr.log").read_text()
        assert "MemoryError: door: no heap for its machine" in err
        assert "the firmware stopped (MemoryError): restarting" in err
