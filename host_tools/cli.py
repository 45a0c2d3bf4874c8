"""`doorctl`: one command for the people who flash, commission and run door controllers.

Each command group lives in its own module under `host_tools.commands` and adds itself
through a `register(app)` function, so a new command is one new module.

`main` is the one place every failure leaves through: a wrong argument, a user error, a
closed pipe, Ctrl-C or a bug each end as one line on stderr and the exit code of the
table in docs/installer-guide.md, never as a traceback (DOORCTL_DEBUG=1 shows it).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import typer
from typer import _click as click
from typer.core import TyperArgument, TyperOption
from typer.exceptions import Abort

from host_tools import __version__
from host_tools import commands as _commands
from host_tools.errors import EXIT_FAILED, EXIT_USAGE, UserError

app = typer.Typer(
    name="doorctl",
    help="Flash, commission, test and run door controllers and their platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it


def _version(value: bool) -> None:
    if value:
        typer.echo(f"doorctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Flash, commission, test and run door controllers and their platform."""


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{_commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


# Help as installers read it: `CARDS` rather than `{cards}` in the usage line, and no type
# column (`<bool>`) for a flag, which takes no value.
def _usage_name(self: TyperArgument) -> str:
    name = (self.metavar or self.name or "").upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


_option_type = TyperOption.display_type_rich


def _option_type_shown(self: TyperOption, ctx: click.Context) -> str | None:
    return None if self.is_flag else _option_type(self, ctx)


TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]
TyperArgument.display_name_raw = property(  # type: ignore[method-assign,assignment]
    lambda self: (self.metavar or self.name or "").upper())
TyperOption.display_type_rich = _option_type_shown  # type: ignore[method-assign]


def command() -> click.Command:
    """The click command tree (what `main` runs; tests walk it)."""
    return typer.main.get_command(app)


def _say(message: str) -> None:
    typer.secho(f"error: {' '.join(message.split())}", err=True, fg=typer.colors.RED)


def _quiet_stdout() -> None:
    """stdout's reader went away (`doorctl ... | head`): drop what is still buffered."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def run(args: Sequence[str] | None = None) -> int:
    """Run doorctl with `args`; return its exit code. Every failure is one line on stderr."""
    try:
        rv: Any = command().main(args=list(args) if args is not None else None,
                                 prog_name="doorctl", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.format_message(), err=True)
        return EXIT_USAGE
    except click.exceptions.ClickException as e:
        where = getattr(e, "ctx", None)
        hint = f" (see {where.command_path} --help)" if where is not None else ""
        _say(e.format_message() + hint)
        return e.exit_code if e.exit_code else EXIT_USAGE
    except UserError as e:
        _say(str(e))
        return e.exit_code
    except Abort:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except Exception as e:  # a bug: say what and where, briefly
        if os.environ.get("DOORCTL_DEBUG"):
            traceback.print_exc()
        where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        at = f" at {os.path.basename(where.filename)}:{where.lineno}" if where else ""
        _say(f"unexpected {type(e).__name__}{at}: {e}; please report it (DOORCTL_DEBUG=1 shows "
             "the traceback)")
        return EXIT_FAILED


def main() -> None:
    """Console-script entry point."""
    code = run()
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _quiet_stdout()
    sys.exit(code)
