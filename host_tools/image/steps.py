"""Build steps with progress on stderr and a failure that names its step.

Each step's output goes to a log file rather than the terminal; a failing step raises one
UserError line naming the step, its last output line and the log.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from host_tools.errors import EXIT_FAILED, EXIT_MISSING_TOOL, UserError
from host_tools.paths import REPO_ROOT

DEFAULT_LOG = REPO_ROOT / "build" / "image-build.log"


class Steps:
    """Runs named steps, printing `== name` and its duration; `quiet` prints nothing."""

    def __init__(self, log: Path = DEFAULT_LOG, out: TextIO | None = None, quiet: bool = False) -> None:
        self.log = log
        self.out = out if out is not None else sys.stderr
        self.quiet = quiet

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.out, flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A step done in Python: its UserErrors pass through, anything else is named."""
        self.say(f"== {name}")
        start = time.monotonic()
        try:
            yield
        except UserError:
            raise
        except Exception as e:  # a bug or an OS error in the step: named, one line
            raise UserError(f"build step '{name}' failed: {type(e).__name__}: {e}") from e
        self.say(f"   {name}: done in {time.monotonic() - start:.1f} s")

    def run(self, name: str, cmd: Sequence[str], cwd: Path | None = None,
            env: dict[str, str] | None = None) -> None:
        """Run `cmd` as step `name`, its output appended to the log."""
        self.say(f"== {name}")
        start = time.monotonic()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as log:
            log.write(f"\n== {name}: {' '.join(cmd)}\n")
            log.flush()
            try:
                proc = subprocess.run(list(cmd), cwd=cwd, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            except FileNotFoundError:
                raise UserError(f"build step '{name}' needs {cmd[0]}, which is not installed "
                                "(Debian: apt-get install build-essential gcc-multilib)",
                                EXIT_MISSING_TOOL) from None
        if proc.returncode != 0:
            raise UserError(f"build step '{name}' failed (exit {proc.returncode}): "
                            f"{last_error_line(self.log)}; full output in {self.log}", EXIT_FAILED)
        self.say(f"   {name}: done in {time.monotonic() - start:.1f} s")


def last_error_line(log: Path) -> str:
    """The most telling line of a build log: the last `error` line, else the last line."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    for line in reversed(lines):
        if "error" in line.lower() and not line.startswith("== "):
            return line[:300]
    return lines[-1][:300] if lines else "no output"
