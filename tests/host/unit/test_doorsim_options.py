"""The door simulator's command line (`python -m host_tools.doorsim`, one process of a city
split over several by --first): a bad option is one line naming it and a non-zero exit,
before any door starts; no traceback, and no run of doors other than the ones asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from host_tools.paths import REPO_ROOT


def _doorsim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host_tools.doorsim", *args], input="",
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


@pytest.mark.parametrize(("args", "named"), [
    (["--broker", "127.0.0.1"], "--broker"),  # no port
    (["--broker", "127.0.0.1:http"], "--broker"),
    (["--broker", "127.0.0.1:70000"], "--broker"),
    (["--broker", ":1883"], "--broker"),  # no host
    (["--broker", "127.0.0.1:1883", "--first", "-1"], "--first"),
    (["--broker", "127.0.0.1:1883", "--doors", "0"], "--doors"),
    (["--broker", "127.0.0.1:1883", "--doors", "-5"], "--doors"),
    (["--broker", "127.0.0.1:1883", "--events", "-1"], "--events"),
    (["--broker", "127.0.0.1:1883", "--batch", "0"], "--batch"),
    (["--broker", "127.0.0.1:1883", "--keys", "/nonexistent/site.json"], "site.json"),
    (["--broker", "127.0.0.1:1883", "--prefix", "door #"], "--prefix"),  # not a device id
])
def test_a_bad_option_is_one_clear_line_and_a_failure(args: list[str], named: str) -> None:
    proc = _doorsim(*args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and named in errors[0], proc.stderr
    assert '"event"' not in proc.stdout  # no door ran


def test_good_options_run_the_doors_asked_for() -> None:
    proc = _doorsim("--broker", "127.0.0.1:1", "--doors", "2", "--first", "3")
    assert proc.returncode == 0, proc.stderr
    assert '"event": "stopped"' in proc.stdout
