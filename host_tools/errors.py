"""One-line user errors with exit codes that scripts can rely on."""

from __future__ import annotations

import typer

# Exit codes shared by every command.
EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran and found a failure (e.g. a self-test item failed)
EXIT_USAGE = 2  # bad arguments or values (typer/click also uses 2)
EXIT_NO_DEVICE = 3  # port missing, nothing answers, not MicroPython
EXIT_UNREACHABLE = 4  # broker/platform unreachable, TLS failure
EXIT_MISSING_TOOL = 5  # a required program or package is not installed
EXIT_INTERRUPTED = 130  # Ctrl-C: what was under way is left whole (old or new), re-run it


class UserError(Exception):
    """An error the user can act on; `message` says what to do."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = EXIT_FAILED) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(exit_code)
