"""A board is one file: a new board module added to a copy of the tree, with no other file
changed, is deployed to the virtual device, which then holds exactly what that board declared
(host_tools/boards.py; docs/architecture.md, "Boards")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.paths import DEVICE_PACKAGES, REPO_ROOT
from host_tools.vdev.device import VirtualDevice

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))

TINY = '''"""The smallest board: the board interface and nothing fitted, running the crypto package."""

from board import interface

PLATFORM = "linux"
PACKAGES = ("crypto",)
DEVICE_FILES = ()
ENTRY = None


class TinyBoard(interface.Board):
    name = "tiny"
    fs_root = "/flash"
'''


def _tree(tmp_path: Path) -> Path:
    """A copy of the repository's code (no build output, caches or tests)."""
    root = tmp_path / "tree"
    skip = shutil.ignore_patterns(".venv", ".git", "build", "tests", "docs", "__pycache__",
                                  "*.egg-info", ".*_cache")
    for name in (*DEVICE_PACKAGES, "host_tools", "reference_platform", "hil", "pyproject.toml"):
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=skip)
        elif src.is_file():
            shutil.copy2(src, root / name)
    return root


@pytest.fixture
def vdev(tmp_path: Path) -> Iterator[VirtualDevice]:
    with VirtualDevice(tmp_path / "dev") as d:
        yield d


def test_a_new_board_module_alone_is_deployed_with_exactly_what_it_declares(
        tmp_path: Path, vdev: VirtualDevice) -> None:
    root = _tree(tmp_path)
    (root / "board" / "tiny.py").write_text(TINY)
    # Run deploy from the copy: its host_tools reads the copy's boards.
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-c", "from host_tools.cli import main; main()",
                           "deploy", "--port", vdev.pty, "--board", "tiny", "--json"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["target"] == "tiny"
    crypto = sorted("lib/" + p.relative_to(root).with_suffix(".mpy").as_posix()
                    for p in (root / "crypto").rglob("*.py"))
    declared = {"lib/board/__init__.mpy", "lib/board/interface.mpy", "lib/board/tiny.mpy", *crypto}
    assert set(manifest["files"]) == declared
    # What the device's staged set holds, file by file, listed on the device.
    listing = subprocess.run(
        [MPREMOTE, "connect", vdev.pty, "exec",
         "import os\n"
         "def W(d):\n"
         " for e in os.ilistdir(d):\n"
         "  p=d+'/'+e[0]\n"
         "  if e[1]==0x4000:W(p)\n"
         "  else:print('F',p)\n"
         "W('sets/a/lib')\n"],
        capture_output=True, text=True, timeout=60).stdout
    held = {line[2 + len("sets/a/"):] for line in listing.splitlines() if line.startswith("F ")}
    assert held == declared
    # Without --board, two boards on the device's platform is one clear line, nothing sent.
    again = subprocess.run([sys.executable, "-c", "from host_tools.cli import main; main()",
                            "deploy", "--port", vdev.pty], cwd=root, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert "both run on linux: choose one with --board" in again.stderr
