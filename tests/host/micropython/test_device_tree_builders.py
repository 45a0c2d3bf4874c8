"""The compiled device tree (build/mpy) is shared: the test workers, virtual devices and deploy
each bring it up to date at once, and each removes the `.mpy` files whose source is gone (a
module moved or deleted). Several at once must all succeed, none tripping over a stale file
another one removed first."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from host_tools.mpy_build import DEFAULT_BUILD_DIR, build_device_tree

BUILD = "from pathlib import Path; from host_tools.mpy_build import build_device_tree; " \
        "build_device_tree(Path({!r}))"


def test_builders_at_once_each_remove_the_stale_files_without_failing(tmp_path: Path) -> None:
    build_device_tree(DEFAULT_BUILD_DIR)
    tree = tmp_path / "mpy"
    shutil.copytree(DEFAULT_BUILD_DIR, tree)  # up to date: only the stale files are work
    for i in range(3000):
        (tree / f"gone{i}.mpy").write_bytes(b"M")
    procs = [subprocess.Popen([sys.executable, "-c", BUILD.format(str(tree))],
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert not list(tree.glob("gone*.mpy"))
