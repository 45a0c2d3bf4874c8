"""One build at a time in a directory: tests and commands running side by side share `build/`.

An advisory `flock` on `<dir>/.lock`, released when the process ends, so a killed build
never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """Hold `directory`'s lock for the block; waits while another process builds there."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
