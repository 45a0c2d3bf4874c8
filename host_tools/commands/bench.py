"""`doorctl bench`: run the benchmarks and print named figures."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess

import typer
from rich.console import Console
from rich.table import Table

from host_tools.benchmarks import discover, select
from host_tools.errors import EXIT_USAGE, fail
from host_tools.paths import micropython


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mp = subprocess.run([micropython(), "-c", "import sys; print(sys.version)"],
                        capture_output=True, text=True).stdout.strip()
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"MicroPython {mp}, {dt.date.today().isoformat()}")


def bench(
    names: list[str] = typer.Argument(None, help="Figures or prefixes to run (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object of figures."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a table for BENCHMARKS.md."),
    list_only: bool = typer.Option(False, "--list", help="List the figures and exit."),
) -> None:
    """Run benchmarks; device figures are measured on the MicroPython unix port.

    Examples:
      doorctl bench                     # everything
      doorctl bench vdev journal.append_ms --json
    """
    benchmarks = discover()
    if list_only:
        for b in benchmarks:
            for fig, desc in sorted(b.figures.items()):
                typer.echo(f"{fig:34} {desc}")
        return
    try:
        chosen = select(benchmarks, names or [])
    except KeyError as e:
        raise fail(f"unknown figure {e.args[0]}: `doorctl bench --list` shows them", EXIT_USAGE) from None
    results: dict[str, float] = {}
    descriptions: dict[str, str] = {}
    for b, figs in chosen.items():
        results.update({k: v for k, v in b.run(figs).items() if k in b.figures})
        descriptions.update(b.figures)
    if as_json:
        typer.echo(json.dumps(results, sort_keys=True))
        return
    if markdown:
        typer.echo(f"Machine: {machine_description()}\n")
        typer.echo("| figure | value | what |\n|---|---|---|")
        for k in sorted(results):
            typer.echo(f"| `{k}` | {results[k]:.4g} | {descriptions[k]} |")
        return
    table = Table("figure", "value", "what")
    for k in sorted(results):
        table.add_row(k, f"{results[k]:.4g}", descriptions[k])
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
