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
