"""`doorctl virtual run` as a user runs it: a real process, its printed addresses work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host_tools.image.source import vendored_tarball
from host_tools.vdev.io_client import VirtualIO

DOORCTL = str(Path(sys.executable).with_name("doorctl"))


def test_virtual_run_prints_working_addresses(tmp_path: Path) -> None:
    proc = subprocess.Popen([DOORCTL, "virtual", "run", "--state", str(tmp_path / "d"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert Path(info["console"]).exists()
        host, port = info["io"].split(":")
        with VirtualIO((host, int(port))) as io:
            assert io.status()["ready"] is True
        assert json.loads((tmp_path / "d" / "vdev.json").read_text())["io"] == info["io"]
        out = subprocess.run([str(Path(sys.executable).with_name("mpremote")), "connect",
                              info["console"], "exec", "print(6 * 7)"],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "42"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert proc.returncode == 0


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


def test_device_process_ends_when_the_launcher_is_killed(tmp_path: Path) -> None:
    proc = subprocess.Popen([DOORCTL, "virtual", "run", "--state", str(tmp_path / "d"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pid = int(json.loads(proc.stdout.readline())["pid"])
        assert _running(pid)
    finally:
        proc.kill()
        proc.wait(10)
    deadline = time.monotonic() + 30
    while _running(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("the device process outlived its launcher")
        time.sleep(0.05)


def test_ctrl_c_in_the_terminal_stops_launcher_and_device(tmp_path: Path) -> None:
    proc = subprocess.Popen([DOORCTL, "virtual", "run", "--state", str(tmp_path / "d"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        pid = int(json.loads(proc.stdout.readline())["pid"])
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 30
    while _running(pid):
        assert time.monotonic() < deadline, "the device outlived its launcher"
        time.sleep(0.05)


def test_virtual_help_explains_the_addresses() -> None:
    out = subprocess.run([DOORCTL, "virtual", "--help"], capture_output=True, text=True).stdout
    for word in ("console", "io", "reader", "raw REPL"):
        assert word in out


def test_virtual_run_on_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("")
    proc = subprocess.run([DOORCTL, "virtual", "run", "--state", str(f)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2  # a wrong value (the table in docs/installer-guide.md)
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "--state" in proc.stderr


def test_a_device_that_cannot_start_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run([DOORCTL, "virtual", "run", "--state", str(tmp_path / "d"), "--heap", "32K"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "MemoryError" in err and "--heap" in err
    assert (tmp_path / "d" / "console.log").exists()


def test_a_second_run_on_one_state_directory_is_a_one_line_error(tmp_path: Path) -> None:
    first = subprocess.Popen([DOORCTL, "virtual", "run", "--state", str(tmp_path / "d"), "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        info = json.loads(first.stdout.readline())
        second = subprocess.run([DOORCTL, "virtual", "run", "--state", str(tmp_path / "d")],
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 3
        err = second.stderr.strip()
        assert len(err.splitlines()) == 1 and "already runs" in err and str(first.pid) in err
        # The first keeps its door: its console still answers.
        out = subprocess.run([str(Path(sys.executable).with_name("mpremote")), "connect",
                              info["console"], "exec", "print(6 * 7)"],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "42"
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(10)
    # Once the first has stopped, the directory is free again.
    again = subprocess.Popen([DOORCTL, "virtual", "run", "--state", str(tmp_path / "d"), "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert again.stdout is not None
        assert json.loads(again.stdout.readline())["state"] == str((tmp_path / "d").resolve())
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(10)


def test_an_unknown_image_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run([DOORCTL, "virtual", "run", "--state", str(tmp_path / "d"), "--image", "esp32"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: unknown image 'esp32'")
    assert "unix32" in err
    assert not (tmp_path / "d").exists()


def test_source_mode_on_the_image_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run([DOORCTL, "virtual", "run", "--state", str(tmp_path / "d"), "--image", "unix32",
                           "--source"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "frozen" in proc.stderr


@pytest.mark.skipif(not (os.environ.get("MICROPY_SRC") or vendored_tarball()),
                    reason="no MicroPython v1.28.0 source here")
def test_virtual_run_on_the_unix32_image_runs_the_frozen_firmware(tmp_path: Path,
                                                                   unix32_binary: Path) -> None:
    proc = subprocess.Popen([DOORCTL, "virtual", "run", "--state", str(tmp_path / "d"), "--image", "unix32",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mpremote = str(Path(sys.executable).with_name("mpremote"))
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["image"] == "unix32"
        host, port = info["io"].split(":")
        with VirtualIO((host, int(port))) as io:
            assert io.status()["ready"] is True
        modules = subprocess.run([mpremote, "connect", info["console"], "exec", "help('modules')"],
                                 capture_output=True, text=True, timeout=30).stdout
        for frozen in ("firmware/main", "firmware/uplink", "crypto/ev2", "offline_cache/cache",
                       "board/virtual", "asyncio/core"):
            assert frozen in modules
        probe = "import sys, firmware.main; print(sys.maxsize, firmware.main.__file__)"
        out = subprocess.run([mpremote, "connect", info["console"], "exec", probe],
                             capture_output=True, text=True, timeout=30).stdout.split()
        assert out == [str(2**31 - 1), "firmware/main.py"]  # 32-bit, and the frozen module
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert proc.returncode == 0
