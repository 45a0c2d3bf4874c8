"""`doorctl bench`: run the benchmarks and print named figures."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from host_tools.benchmarks import Benchmark, discover, reason, select
from host_tools.cards import pcsc_private
from host_tools.errors import EXIT_FAILED, EXIT_USAGE, fail
from host_tools.paths import ToolMissing, micropython

BEGIN = "<!-- doorctl bench --markdown: begin -->"
END = "<!-- doorctl bench --markdown: end -->"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def micropython_version() -> str:
    """e.g. `1.29.0-preview (9458e3a23f, 2026-07-05; unix port, .mpy v6)`."""
    program = ("import sys; v = sys.implementation.version; "
               "print('.'.join(str(x) for x in v[:3]) + ('-' + v[3] if len(v) > 3 and v[3] "
               "else '')); print(sys.version); print(sys.implementation._mpy & 0xff)")
    try:
        lines = subprocess.run([micropython(), "-c", program], capture_output=True, text=True,
                               timeout=30).stdout.splitlines()
    except (ToolMissing, OSError, subprocess.TimeoutExpired):
        return "not installed"
    if len(lines) < 3:
        return "unknown"
    build = re.search(r"MicroPython (\S+) on (\S+)", lines[1])
    where = f"{build.group(1).lstrip('v')}, {build.group(2)}; " if build else ""
    return f"{lines[0]} ({where}unix port, .mpy v{lines[2]})"


def machine_description() -> dict[str, str]:
    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "MicroPython": micropython_version(),
        "date": dt.date.today().isoformat(),
    }


def fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


ROW = re.compile(r"^\| `([^`]+)` \| ([^|]*) \| (.*) \|$", re.M)


def markdown(results: dict[str, float], descriptions: dict[str, str],
             machine: dict[str, str], kept: dict[str, tuple[str, str]] | None = None,
             errors: dict[str, str] | None = None) -> str:
    """The generated block. `kept`: rows of an earlier run (name -> (value, what)) for
    figures this run did not measure; `errors`: figures that failed, with why."""
    lines = [BEGIN, "", "Measured with `doorctl bench --markdown` on this machine:", "",
             "| machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    rows = {k: (fmt(results[k]), descriptions[k]) for k in results}
    rows.update({k: ("failed", f"{descriptions.get(k, '')} **failed: {why}**")
                 for k, why in (errors or {}).items()})
    old = {k: v for k, v in (kept or {}).items() if k not in rows}
    if old:
        lines += ["", f"{len(rows)} figures from this run; {len(old)} kept from an earlier run "
                      "(each benchmark's figures and baselines always come from one run)."]
    rows.update(old)
    lines += ["", "| figure | value | what |", "|---|---:|---|"]
    lines += [f"| `{k}` | {rows[k][0]} | {rows[k][1]} |" for k in sorted(rows)]
    lines += ["", END]
    return "\n".join(lines) + "\n"


def existing_rows(path: Path) -> dict[str, tuple[str, str]]:
    """Figure rows of the generated block already in `path`."""
    if not path.exists():
        return {}
    text = path.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return {}
    return {m.group(1): (m.group(2).strip(), m.group(3).strip())
            for m in ROW.finditer(text[start:end])}


def update_file(path: Path, block: str) -> None:
    """Replace the generated block in `path` (between the markers), keeping the rest."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def bench(
    names: list[str] = typer.Argument(None, help="Figures or prefixes to run, e.g. `vdev` or "
                                      "`journal.append_ms` (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object "
                                 "{\"figure.name\": number, ...} and nothing else on stdout; "
                                 "figures that failed are in its \"errors\" object "
                                 "{\"figure.name\": \"why\"}, present only when one failed."),
    as_markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table with the "
                                     "machine description, for BENCHMARKS.md."),
    update: Path = typer.Option(None, "--update", metavar="FILE", help="With --markdown: "
                                "update the generated table in FILE (figures not run this time are kept), "
                                "keeping the text around it."),
    list_only: bool = typer.Option(False, "--list", help="List the figures and exit."),
) -> None:
    """Run benchmarks and print named figures; device figures are measured on the MicroPython unix port, each beside a baseline measured in the same run.

    A figure that fails is reported with its reason and the others are still measured; the exit status is 1 when any figure failed.

    Examples:

      doorctl bench

      doorctl bench --list

      doorctl bench vdev journal.append_ms --json

      doorctl bench --markdown --update BENCHMARKS.md
    """  # noqa: E501
    err = Console(stderr=True)

    unloaded: dict[str, str] = {}

    def broken(module: str, e: Exception) -> None:
        err.print(f"warning: benchmark {module} cannot be loaded: {e}", style="yellow",
                  markup=False, highlight=False, soft_wrap=True)
        unloaded[module] = f"benchmark {module} cannot be loaded: {reason(e)}"

    benchmarks = discover(on_error=broken)
    if list_only:
        listed = sorted((fig, desc) for b in benchmarks for fig, desc in b.figures.items())
        width = max((len(fig) for fig, _ in listed), default=0) + 2
        for fig, desc in listed:
            typer.echo(f"{fig:{width}}{desc}")
        return
    if update is not None and not as_markdown:
        raise fail("--update writes the Markdown table: add --markdown", EXIT_USAGE)
    try:
        chosen = select(benchmarks, names or [])
    except KeyError as e:
        raise fail(f"unknown figure {e.args[0]}: `doorctl bench --list` shows them",
                   EXIT_USAGE) from None
    private_pcscd = pcsc_private.isolate_in_temp()  # PC/SC figures: this run's own pcscd
    try:
        results, descriptions, errors = run_selected(chosen, err)
    finally:
        if private_pcscd is not None:
            private_pcscd.cleanup()
    if not names:  # a full run: a module that could not be loaded lost all its figures
        errors.update(unloaded)
    if as_json:
        typer.echo(json.dumps({**results, **({"errors": errors} if errors else {})},
                              sort_keys=True))
    elif as_markdown:
        kept = existing_rows(update) if update is not None else None
        block = markdown(results, descriptions, machine_description(), kept, errors)
        if update is not None:
            update_file(update, block)
            typer.echo(f"updated {update} ({len(results)} figures)")
        else:
            typer.echo(block, nl=False)
    else:
        table = Table("figure", "value", "what")
        for k in sorted({*results, *errors}):
            if k in errors:
                table.add_row(k, "[red]failed[/red]", f"[red]{escape(errors[k])}[/red]")
            else:
                table.add_row(k, fmt(results[k]), escape(descriptions[k]))
        Console().print(table)
    if errors:
        for name, why in sorted(errors.items()):
            err.print(f"error: {name} failed: {why}", style="red", markup=False, highlight=False,
                      soft_wrap=True)
        raise fail(f"{len(errors)} of {len(errors) + len(results)} figures failed",
                   EXIT_FAILED)


def run_selected(chosen: dict[Benchmark, set[str]], err: Console
                 ) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """Run every chosen benchmark: (figures measured, descriptions, figure -> why it failed).
    A failing figure never stops the others."""
    results: dict[str, float] = {}
    descriptions: dict[str, str] = {}
    errors: dict[str, str] = {}
    with Progress(TextColumn("bench"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), console=err, transient=True,
                  disable=not err.is_terminal) as bar:
        task = bar.add_task("", total=len(chosen))
        for b, figs in sorted(chosen.items(), key=lambda item: item[0].name):
            bar.update(task, description=f"{b.name} ({len(figs)} figures)")
            measured, failed = b.run(figs)
            results.update(measured)
            errors.update(failed)
            descriptions.update(b.figures)
            bar.advance(task)
    return results, descriptions, errors


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
