"""`doorctl`: one command for the people who flash, commission and run door controllers.

Each command group lives in its own module under `host_tools.commands` and adds itself
through a `register(app)` function, so a new command is one new module.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

from host_tools import __version__
from host_tools import commands as _commands

app = typer.Typer(
    name="doorctl",
    help="Flash, commission, test and run door controllers and their platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


def main() -> None:
    """Console-script entry point."""
    app()
