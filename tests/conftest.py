"""Test-suite wiring: device tests under MicroPython, fixtures shared by host tests."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.mpy_plugin"]


@pytest.fixture(scope="session")
def unix32_binary() -> Path:
    """The 32-bit unix image (doorctl build unix32), built once and cached in build/."""
    from host_tools.image.steps import Steps
    from host_tools.image.unix32 import build_unix32

    return build_unix32(Steps(quiet=True)).binary
