"""host_tools/console.py, the host's one way to a device's console, against the real
mpremote and a real virtual device: one-line errors, the MemoryError retry only for steps
that may run twice, and the atomic file write."""

from __future__ import annotations

import os
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools import console
from host_tools.errors import EXIT_NO_DEVICE, UserError
from host_tools.vdev.device import VirtualDevice

# Appends one mark per run to a file, then fails as a device out of heap does.
RUN_THEN_MEMORY_ERROR = "f = open('runs', 'a')\nf.write('x')\nf.close()\nraise MemoryError"
RUNS = "try:\n    print('RUNS', open('runs').read())\nexcept OSError:\n    print('RUNS')"


@pytest.fixture
def vdev(tmp_path: Path) -> Iterator[VirtualDevice]:
    with VirtualDevice(tmp_path / "dev") as d:
        yield d


def _read(port: str, path: str) -> str:
    out = console.mpremote(port, "exec", f"print('DATA', repr(open({path!r}).read()))")
    return next(line[5:] for line in out.splitlines() if line.startswith("DATA "))


def test_a_missing_port_is_one_line_before_anything_waits() -> None:
    with pytest.raises(UserError) as e:
        console.connect("/dev/ttyUSB-nothing-here")
    assert e.value.exit_code == EXIT_NO_DEVICE and "does not exist" in str(e.value)


def test_a_port_where_nothing_answers_is_one_line_not_a_hang() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        with pytest.raises(UserError) as e:
            console.handshake(os.ttyname(slave))
        assert e.value.exit_code == EXIT_NO_DEVICE and "nothing answers" in str(e.value)
        with pytest.raises(UserError) as e:  # mpremote itself, bounded by its timeout
            console.mpremote(os.ttyname(slave), "exec", "print(1)", timeout=3)
        assert e.value.exit_code == EXIT_NO_DEVICE and "nothing answers" in str(e.value)
    finally:
        os.close(master)
        os.close(slave)


def test_memory_error_is_retried_once_only_for_idempotent_steps(vdev: VirtualDevice) -> None:
    console.connect(vdev.pty)
    with pytest.raises(UserError) as e:
        console.mpremote(vdev.pty, "exec", RUN_THEN_MEMORY_ERROR)
    assert "ran out of memory" in str(e.value) and "\n" not in str(e.value)
    assert "RUNS xx" in console.mpremote(vdev.pty, "exec", RUNS)
    console.mpremote(vdev.pty, "exec", "import os\nos.remove('runs')")
    with pytest.raises(UserError):
        console.mpremote(vdev.pty, "exec", RUN_THEN_MEMORY_ERROR, idempotent=False)
    assert "RUNS x" in console.mpremote(vdev.pty, "exec", RUNS)
    assert "RUNS xx" not in console.mpremote(vdev.pty, "exec", RUNS)


def test_a_failing_program_is_one_line_with_its_last_line(vdev: VirtualDevice) -> None:
    with pytest.raises(UserError) as e:
        console.mpremote(vdev.pty, "exec", "raise ValueError('the reason')")
    assert str(e.value) == f"mpremote failed on {vdev.pty}: ValueError: the reason"


def test_write_file_replaces_the_whole_file(vdev: VirtualDevice) -> None:
    console.write_file(vdev.pty, "note.json", b'{"v": 1}')
    assert _read(vdev.pty, "note.json") == repr('{"v": 1}')
    console.write_file(vdev.pty, "note.json", b'{"v": 2, "longer": true}')
    assert _read(vdev.pty, "note.json") == repr('{"v": 2, "longer": true}')
    listing = console.mpremote(vdev.pty, "exec", "import os\nprint(os.listdir())")
    assert "note.json.tmp" not in listing


def test_write_file_cut_before_its_rename_leaves_the_old_content(vdev: VirtualDevice,
                                                                 tmp_path: Path) -> None:
    console.write_file(vdev.pty, "note.json", b"old")
    # The first half of a write, then the power goes: the new content waits beside the file.
    src = tmp_path / "new"
    src.write_bytes(b"new")
    console.mpremote(vdev.pty, "fs", "cp", "-f", str(src), ":note.json.tmp")
    vdev.kill()
    vdev.restart()
    assert _read(vdev.pty, "note.json") == repr("old")
    console.write_file(vdev.pty, "note.json", b"new")  # a write after the cut completes
    assert _read(vdev.pty, "note.json") == repr("new")
