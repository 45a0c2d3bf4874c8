"""Cache keys for built images: a hash over everything that goes into them.

An image is rebuilt when its key changes: the manifest, the frozen sources, the build's own
settings, or the MicroPython tree (identified by its version and, for the vendored tarball,
its sha256 in the tree's directory name).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def files_under(*roots: Path, suffixes: tuple[str, ...] = (".py",)) -> list[Path]:
    """Every file with one of `suffixes` under `roots` (files are taken as they are), sorted."""
    found: set[Path] = set()
    for root in roots:
        if root.is_file():
            found.add(root)
        elif root.is_dir():
            found.update(p for p in root.rglob("*") if p.is_file() and p.suffix in suffixes
                         and "__pycache__" not in p.parts)
    return sorted(found)


def cache_key(files: Iterable[Path], base: Path, settings: Iterable[str] = ()) -> str:
    """sha256 over each file's path (relative to `base`) and content, then `settings`."""
    h = hashlib.sha256()
    for f in sorted(files):
        rel = f.resolve().relative_to(base.resolve()) if f.resolve().is_relative_to(base.resolve()) else f
        h.update(str(rel).encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    for s in settings:
        h.update(b"\1" + s.encode())
    return h.hexdigest()
