"""The image builds share one source tree: its mpy-cross is built under a lock."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from host_tools.image.lock import build_lock
from host_tools.image.source import build_mpy_cross
from host_tools.image.steps import Steps


def _locked(directory: Path) -> bool:
    with open(directory / ".lock", "w") as other:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(other, fcntl.LOCK_UN)
        return False


class _RecordingSteps(Steps):
    """Steps that run nothing and note whether the mpy-cross lock was held at the make."""

    def __init__(self, lock_dir: Path) -> None:
        super().__init__(quiet=True)
        self.lock_dir = lock_dir
        self.held: list[bool] = []

    def run(self, name: str, cmd: object, **_: object) -> None:  # type: ignore[override]
        self.held.append(_locked(self.lock_dir))


def test_mpy_cross_is_made_under_the_trees_lock(tmp_path: Path) -> None:
    exe = tmp_path / "mpy-cross" / "build" / "mpy-cross"
    exe.parent.mkdir(parents=True)
    exe.write_text("")
    steps = _RecordingSteps(tmp_path / "mpy-cross")
    assert build_mpy_cross(tmp_path, steps) == exe
    assert steps.held == [True]
    assert not _locked(tmp_path / "mpy-cross")  # released after


def test_the_lock_is_released_when_the_build_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), build_lock(tmp_path):
        raise RuntimeError("make failed")
    assert not _locked(tmp_path)
