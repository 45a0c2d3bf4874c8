"""Find the MicroPython v1.28.0 source tree the image builds are made from.

Looked up in this order: `$MICROPY_SRC` (a checkout the user points to), else the vendored
tarball `shared/vendor/micropython-1.28.0-src.tar.gz` beside the repository (CI clones the
repository next to a read-only `shared/`), extracted once under `build/` and keyed by its
sha256, so a changed tarball never reuses an old tree. Nothing found: one line saying where
to get the release.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path

from host_tools.errors import EXIT_MISSING_TOOL, UserError
from host_tools.image.lock import build_lock
from host_tools.image.steps import Steps
from host_tools.paths import REPO_ROOT

MICROPY_VERSION = "1.28.0"
TARBALL_NAME = f"micropython-{MICROPY_VERSION}-src.tar.gz"
# The vendored tarball's hash (shared/vendor/README.md): a different file is not used.
TARBALL_SHA256 = "28a5efdc93227b93898435718bbc0b5df997d4d06628fe3a1d0f49e00a70abc3"
SOURCE_BUILD_DIR = REPO_ROOT / "build" / "micropython-src"
GET_SOURCE_HINT = (
    f"get MicroPython v{MICROPY_VERSION}: git clone --branch v{MICROPY_VERSION} "
    "https://github.com/micropython/micropython && make -C micropython/ports/unix submodules, "
    "then set MICROPY_SRC=$PWD/micropython"
)


def vendored_tarball(repo_root: Path = REPO_ROOT) -> Path | None:
    """The tarball in `shared/vendor/` beside the repository or beside one of its parents."""
    for parent in repo_root.resolve().parents:
        candidate = parent / "shared" / "vendor" / TARBALL_NAME
        if candidate.is_file():
            return candidate
    return None


def _version_of(tree: Path) -> str | None:
    """`1.28.0` from `py/mpconfig.h`, or None when the tree is not MicroPython."""
    header = tree / "py" / "mpconfig.h"
    if not header.is_file():
        return None
    parts: dict[str, str] = {}
    for line in header.read_text(errors="replace").splitlines():
        for key in ("MAJOR", "MINOR", "MICRO"):
            prefix = f"#define MICROPY_VERSION_{key} "
            if line.startswith(prefix):
                parts[key] = line[len(prefix):].strip()
    if len(parts) != 3:
        return None
    return f"{parts['MAJOR']}.{parts['MINOR']}.{parts['MICRO']}"


def check_tree(tree: Path, origin: str) -> Path:
    """`tree` if it is a MicroPython v1.28.0 source tree with micropython-lib, else UserError."""
    version = _version_of(tree)
    if version is None:
        raise UserError(f"{origin} {tree} is not a MicroPython source tree (no py/mpconfig.h); "
                        + GET_SOURCE_HINT, EXIT_MISSING_TOOL)
    if version != MICROPY_VERSION:
        raise UserError(f"{origin} {tree} is MicroPython {version}, the image needs "
                        + GET_SOURCE_HINT, EXIT_MISSING_TOOL)
    if not (tree / "lib" / "micropython-lib" / "python-stdlib").is_dir():
        raise UserError(f"{origin} {tree} lacks lib/micropython-lib: run "
                        f"make -C {tree}/ports/unix submodules", EXIT_MISSING_TOOL)
    return tree


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract_tarball(tarball: Path, dest_root: Path = SOURCE_BUILD_DIR) -> Path:
    """Extract `tarball` once into `dest_root/<sha256 prefix>/`; returns the source tree.

    Extracted beside the target and renamed into place, so an interrupted extraction or a
    second process never sees half a tree.
    """
    digest = file_sha256(tarball)
    if digest != TARBALL_SHA256:
        raise UserError(f"{tarball} is not the vendored v{MICROPY_VERSION} tarball (sha256 "
                        f"{digest[:12]}…, expected {TARBALL_SHA256[:12]}…); " + GET_SOURCE_HINT,
                        EXIT_MISSING_TOOL)
    final = dest_root / digest[:16]
    tree = final / f"micropython-{MICROPY_VERSION}"
    if tree.is_dir():
        return tree
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = dest_root / f".{digest[:16]}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        try:
            os.rename(tmp, final)
        except OSError:
            if not tree.is_dir():  # not another process that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tree


def micropython_source(steps: Steps | None = None, repo_root: Path = REPO_ROOT,
                       dest_root: Path = SOURCE_BUILD_DIR) -> Path:
    """The MicroPython v1.28.0 source tree to build from (see the module docstring)."""
    env = os.environ.get("MICROPY_SRC")
    if env:
        return check_tree(Path(env).expanduser().resolve(), "MICROPY_SRC")
    tarball = vendored_tarball(repo_root)
    if tarball is None:
        raise UserError(f"no MicroPython source: neither $MICROPY_SRC nor ../shared/vendor/"
                        f"{TARBALL_NAME} is there; " + GET_SOURCE_HINT, EXIT_MISSING_TOOL)
    steps = steps or Steps()
    with steps.step(f"source: {tarball.name}"):
        tree = extract_tarball(tarball, dest_root)
    return check_tree(tree, "the vendored tarball's tree")


def build_mpy_cross(tree: Path, steps: Steps | None = None) -> Path:
    """Build mpy-cross in `tree` (once; make keeps it current); returns the executable.

    Under the tree's mpy-cross lock: the unix32 and mcu builds share this one build
    directory, and two makes writing it at once leave a broken compiler.
    """
    exe = tree / "mpy-cross" / "build" / "mpy-cross"
    steps = steps or Steps()
    with build_lock(tree / "mpy-cross"):
        steps.run("mpy-cross", ["make", "-C", str(tree / "mpy-cross"), f"-j{os.cpu_count() or 1}"])
    if not exe.is_file():
        raise UserError(f"build step 'mpy-cross' made no {exe}", EXIT_MISSING_TOOL)
    return exe
