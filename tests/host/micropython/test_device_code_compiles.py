"""Every device file is MicroPython code: mpy-cross must accept it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from host_tools.paths import REPO_ROOT, device_sources, mpy_cross

SOURCES = device_sources()
# The image manifests are not device code (MicroPython's build runs them on the host), but they
# sit among it, where tools that compile every file under board/ read them: plain syntax too.
MANIFESTS = sorted((REPO_ROOT / "board").rglob("manifest.py"))


def test_there_is_device_code() -> None:
    assert any(p.parts[-2] == "firmware" for p in SOURCES)


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: str(Path(p).relative_to(REPO_ROOT)))
def test_mpy_cross_compiles(src: Path) -> None:
    proc = subprocess.run([mpy_cross(), "-o", "/dev/null", str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("src", MANIFESTS, ids=lambda p: str(Path(p).relative_to(REPO_ROOT)))
def test_mpy_cross_reads_the_image_manifests(src: Path) -> None:
    proc = subprocess.run([mpy_cross(), "-o", "/dev/null", str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
