"""`doorctl deploy` against the virtual device's pty with the real mpremote, and against
ports that are missing, silent, or not MicroPython."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware import VERSION
from host_tools.vdev.device import VirtualDevice

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def doorctl(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOORCTL, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def vdev(tmp_path: Path) -> Iterator[VirtualDevice]:
    with VirtualDevice(tmp_path / "dev") as d:
        yield d


def test_deploy_copies_verifies_and_records(vdev: VirtualDevice) -> None:
    proc = doorctl("deploy", "--port", vdev.pty, "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    files = manifest["files"]
    assert "lib/firmware/main.mpy" in files and "lib/board/vdev/flashsim.mpy" in files
    assert "lib/board/vdev/boot.mpy" not in files and not any("/vdev/lib/" in f for f in files)
    # The virtual device gets neither the ESP32 board nor a main.py (its launcher boots it).
    assert "lib/board/esp32_ref.mpy" not in files and "main.py" not in files
    assert manifest["target"] == "virtual" and manifest["firmware"] == VERSION
    assert manifest["device"]["mpy"] == 6
    assert sorted(manifest["copied"]) == sorted(files)
    out = subprocess.run([MPREMOTE, "connect", vdev.pty, "fs", "sha256sum",
                          ":sets/a/lib/firmware/main.mpy"], capture_output=True, text=True).stdout
    assert files["lib/firmware/main.mpy"] in out
    stored = subprocess.run([MPREMOTE, "connect", vdev.pty, "exec",
                             "print(open('sets/a/deploy.json').read())"],
                            capture_output=True, text=True).stdout
    assert json.loads(stored)["files"] == files

    again = doorctl("deploy", "--port", vdev.pty, "--json")
    assert again.returncode == 0 and again.stderr == ""
    second = json.loads(again.stdout)
    # Only files whose compiled form changed since (normally none) are copied again.
    changed = sorted(f for f in second["files"] if files.get(f) != second["files"][f])
    assert sorted(second["copied"]) == changed
    assert second["removed"] == []


def test_deployed_code_runs_after_reset(vdev: VirtualDevice) -> None:
    proc = doorctl("deploy", "--port", vdev.pty)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"deployed firmware {VERSION} (")
    assert proc.stdout.rstrip().endswith("verified by sha256") and proc.stderr == ""
    subprocess.run([MPREMOTE, "connect", vdev.pty, "reset"], capture_output=True, timeout=30)
    import time
    deadline = time.monotonic() + 20
    while vdev.boots < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    vdev.wait_ready()
    out = subprocess.run([MPREMOTE, "connect", vdev.pty, "exec",
                          "import firmware.main as m; print(m.__file__)"],
                         capture_output=True, text=True, timeout=30).stdout
    assert out.strip() == "/flash/sets/a/lib/firmware/main.mpy"


def test_a_changed_file_is_recopied_and_a_stale_one_removed(vdev: VirtualDevice) -> None:
    first = doorctl("deploy", "--port", vdev.pty, "--json")
    assert first.returncode == 0, first.stderr
    files = json.loads(first.stdout)["files"]
    setup = (
        "import os\n"
        "with open('sets/a/lib/firmware/log.mpy', 'wb') as f: f.write(b'corrupt')\n"
        "with open('sets/a/lib/firmware/retired.mpy', 'wb') as f: f.write(b'old module')\n"
        "os.mkdir('lib/umqtt')\n"
        "with open('lib/umqtt/simple.py', 'w') as f: f.write('# installed with mip')\n"
    )
    out = subprocess.run([MPREMOTE, "connect", vdev.pty, "exec", setup],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    proc = doorctl("deploy", "--port", vdev.pty, "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    changed = {f for f in manifest["files"] if files.get(f) != manifest["files"][f]}
    assert set(manifest["copied"]) == {"lib/firmware/log.mpy"} | changed
    assert manifest["removed"] == ["lib/firmware/retired.mpy"]
    listing = subprocess.run([MPREMOTE, "connect", vdev.pty, "exec",
                              "import os; print(os.listdir('sets/b/lib/firmware'), "
                              "os.listdir('lib/umqtt'))"],
                             capture_output=True, text=True, timeout=30).stdout
    assert "retired.mpy" not in listing
    assert "simple.py" in listing  # other libraries in lib/ are not ours to remove


def test_missing_port_is_one_clear_line() -> None:
    proc = doorctl("deploy", "--port", "/dev/ttyUSB-nothing-here")
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0]


def test_silent_port_times_out_with_a_clear_line() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        proc = doorctl("deploy", "--port", os.ttyname(slave), timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 3
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "nothing answers" in proc.stderr


@pytest.mark.parametrize("peer", ["prompt", "stream"])
def test_a_device_that_is_not_micropython_is_refused(peer: str) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def chatter() -> None:
        # "prompt": answers everything with a shell prompt; "stream": talks on and on
        # (a GPS, a logging board) whatever it is sent.
        os.set_blocking(master, False)
        while not stop.is_set():
            try:
                if peer == "stream":
                    if select.select([master], [], [], 0)[0]:
                        os.read(master, 1024)  # whatever it is sent, it goes on
                    os.write(master, b"$GPGGA,123519,4807.038,N,01131.000,E\r\n")
                    stop.wait(0.01)
                elif os.read(master, 1024):
                    os.write(master, b"\r\nlogin: ")
            except BlockingIOError:
                stop.wait(0.01)
            except OSError:
                return

    t = threading.Thread(target=chatter, daemon=True)
    t.start()
    try:
        proc = doorctl("deploy", "--port", os.ttyname(slave), timeout=120)
    finally:
        stop.set()
        t.join()
        os.close(master)
        os.close(slave)
    assert proc.returncode == 3
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "is not running MicroPython (no raw REPL)" in proc.stderr


def test_a_port_held_by_another_program_is_one_clear_line() -> None:
    import serial

    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    holder = serial.Serial(name, exclusive=True)  # like a serial terminal left open
    try:
        proc = doorctl("deploy", "--port", name, timeout=120)
    finally:
        holder.close()
        os.close(master)
        os.close(slave)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot open {name}: ")
    assert "another program" in lines[0]
