"""The README's first command plays its scenario to the end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOORCTL = str(Path(sys.executable).with_name("doorctl"))


def test_demo_runs_end_to_end() -> None:
    proc = subprocess.run([DOORCTL, "demo", "--pace", "0"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "device online at the platform" in out
    assert "platform sees the device offline" in out
    assert "missing: none" in out
    assert "time_set" in out
    assert "resident card: door unlocked" in out
    assert "clone card: refused" in out and "lost card: refused" in out
    assert "access_denied (auth_failed)" in out and "access_denied (lost)" in out
    assert "held_open_cleared" in out



def _session(sid: int) -> dict[int, str]:
    """The processes still in session `sid`: pid -> command line."""
    out = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[3]) == sid and stat[0] != "Z":  # a zombie is ended, its parent gone
                out[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue  # not a process, or ended meanwhile
    return out


def test_a_demo_whose_door_cannot_start_stops_its_broker_and_platform(tmp_path: Path) -> None:
    """The state folder is another running virtual door's (its lock held): the demo says so in
    one line and leaves no mosquitto behind it."""
    import fcntl
    import os
    import time

    from host_tools.vdev.device import LOCK_FILE

    state = tmp_path / "door"
    state.mkdir()
    fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = subprocess.Popen([DOORCTL, "demo", "--pace", "0", "--state", str(state)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        _, err = proc.communicate(timeout=120)
    finally:
        os.close(fd)
    time.sleep(0.5)
    left = _session(proc.pid)  # its session: the broker it started included
    for pid in left:
        os.kill(pid, 15)  # not left running for the rest of the suite
    assert proc.returncode != 0
    assert err.startswith("error: another virtual device") and len(err.splitlines()) == 1, err
    assert left == {}
