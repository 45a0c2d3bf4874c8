"""`doorctl bench`: run the benchmarks and print named figures."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import NamedTuple

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from host_tools.benchmarks import Benchmark, discover, drift, reason, select
from host_tools.cards import pcsc_private
from host_tools.errors import EXIT_FAILED, EXIT_USAGE, fail
from host_tools.paths import REPO_ROOT, ToolMissing, micropython

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


class Row(NamedTuple):
    """A figure's row in the generated table."""
    value: str
    what: str
    commit: str  # the commit it was measured at ("" for a row from before the column existed)


KEPT = " (kept)"


def measured_at() -> str:
    """The commit this run measures, `+dirty` when tracked files differ from it (BENCHMARKS.md,
    which --update writes, aside)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!BENCHMARKS.md"], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def markdown(results: dict[str, float], descriptions: dict[str, str],
             machine: dict[str, str], commit: str, kept: dict[str, Row] | None = None,
             errors: dict[str, str] | None = None) -> str:
    """The generated block: every row says the commit it was measured at. `kept`: rows of
    earlier runs for figures this run did not measure (still defined), marked kept, with
    their own commit, unless that commit is this clean one (then they are of this commit,
    counted apart); `errors`: figures that failed, with why."""
    lines = [BEGIN, "", f"Measured with `doorctl bench --markdown` at commit `{commit}` on this "
             "machine:", "", "| machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    here = f"`{commit}`"
    rows = {k: Row(fmt(results[k]), descriptions[k], here) for k in results}
    rows.update({k: Row("failed", f"{descriptions.get(k, '')} **failed: {why}**", here)
                 for k, why in (errors or {}).items()})
    earlier = {k: r for k, r in (kept or {}).items() if k not in rows and k in descriptions}
    # A clean commit's row from an earlier run of that same commit (an hour-long run measured
    # on its own, say) is of this commit: not kept from older code.
    same = {k: Row(r.value, r.what, here) for k, r in earlier.items()
            if r.commit == commit and commit != "unknown" and not commit.endswith("+dirty")}
    old = {k: Row(r.value, r.what, (f"`{r.commit}`" if r.commit else "unknown") + KEPT)
           for k, r in earlier.items() if k not in same}
    if same:
        lines += ["", f"{len(same)} of {len(rows) + len(same) + len(old)} figures come from an "
                      f"earlier run at this same commit (`{commit}`): "
                      + ", ".join(sorted({k.split('.')[0] + ".*" for k in same})) + "."]
    rows.update(same)
    if old:
        lines += ["", f"**{len(old)} of {len(rows) + len(old)} figures were not measured at "
                      f"`{commit}`**: they are kept from earlier runs, each row with the commit "
                      "it was measured at (each benchmark's figures and baselines always come "
                      "from one run)."]
    rows.update(old)
    lines += ["", "| figure | value | commit | what |", "|---|---:|---|---|"]
    lines += [f"| `{k}` | {r.value} | {r.commit} | {r.what} |" for k, r in sorted(rows.items())]
    lines += ["", END]
    return "\n".join(lines) + "\n"


def existing_rows(path: Path) -> dict[str, Row]:
    """Figure rows of the generated block already in `path` (with or without the commit
    column)."""
    if not path.exists():
        return {}
    text = path.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return {}
    rows: dict[str, Row] = {}
    for line in text[start:end].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) not in (3, 4) or not (cells[0].startswith("`") and cells[0].endswith("`")):
            continue
        name = cells[0].strip("`")
        if len(cells) == 3:
            rows[name] = Row(cells[1], cells[2], "")
        else:
            commit = cells[2].removesuffix(KEPT).strip("`")
            rows[name] = Row(cells[1], cells[3], "" if commit == "unknown" else commit)
    return rows


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
    names: list[str] = typer.Argument(None, help="Figures or prefixes to run, e.g. `vdev`, "
                                      "`journal.append_ms` or the family `image.soak` "
                                      "(image.soak_*) (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object "
                                 "{\"figure.name\": number, ...} and nothing else on stdout; "
                                 "figures that failed are in its \"errors\" object "
                                 "{\"figure.name\": \"why\"}, present only when one failed."),
    as_markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table with the "
                                     "machine description, for BENCHMARKS.md."),
    update: Path = typer.Option(None, "--update", metavar="FILE", help="With --markdown: "
                                "update the generated table in FILE, keeping the text around it; "
                                "figures not run this time are kept, marked kept with the commit "
                                "they were measured at."),
    quick: bool = typer.Option(False, "--quick", help="Only the quick figures (each benchmark's "
                               "QUICK_FIGURES, with its quicker settings): well under a minute."),
    compare: Path = typer.Option(None, "--compare", metavar="FILE", help="Compare each figure "
                                 "measured with its row in FILE (BENCHMARKS.md) and report those "
                                 "that moved beyond their noise band (a report: the exit status "
                                 "is still 0 unless a figure failed, or --fail-on-drift)."),
    fail_on_drift: bool = typer.Option(False, "--fail-on-drift", help="With --compare: exit 1 "
                                       "when a figure moved beyond its noise band."),
    list_only: bool = typer.Option(False, "--list", help="List the figures and exit."),
) -> None:
    """Run benchmarks and print named figures; device figures are measured on the MicroPython unix port, each beside a baseline measured in the same run.

    A figure that fails is reported with its reason and the others are still measured; the exit status is 1 when any figure failed.

    Examples:

      doorctl bench

      doorctl bench --list

      doorctl bench vdev journal.append_ms --json

      doorctl bench --markdown --update BENCHMARKS.md

      doorctl bench --quick --compare BENCHMARKS.md
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
    if quick and update is not None:
        raise fail("--quick figures are measured with quicker settings: the table is updated "
                   "from a full run, without --quick", EXIT_USAGE)
    if fail_on_drift and compare is None:
        raise fail("--fail-on-drift goes with --compare FILE", EXIT_USAGE)
    if compare is not None and not existing_rows(compare):
        raise fail(f"{compare} holds no benchmark table to compare with", EXIT_USAGE)
    try:
        chosen = select(benchmarks, names or [])
    except KeyError as e:
        raise fail(f"unknown figure {e.args[0]}: `doorctl bench --list` shows them",
                   EXIT_USAGE) from None
    if quick:
        chosen = {b: figs & b.quick_figures for b, figs in chosen.items() if figs & b.quick_figures}
        if not chosen:
            raise fail("none of these figures is a quick one (`--quick` alone runs them all)",
                       EXIT_USAGE)
    private_pcscd = pcsc_private.isolate_in_temp()  # PC/SC figures: this run's own pcscd
    try:
        results, errors = run_selected(chosen, err, quick)
    finally:
        if private_pcscd is not None:
            private_pcscd.cleanup()
    if not names and not quick:  # a full run: a module that could not load lost its figures
        errors.update(unloaded)
    descriptions = {f: d for b in benchmarks for f, d in b.figures.items()}
    if as_json:
        typer.echo(json.dumps({**results, **({"errors": errors} if errors else {})},
                              sort_keys=True))
    elif as_markdown:
        kept = existing_rows(update) if update is not None else None
        block = markdown(results, descriptions, machine_description(), measured_at(), kept,
                         errors)
        if update is not None:
            update_file(update, block)
            typer.echo(f"updated {update} ({len(results)} figures)")
        else:
            typer.echo(block, nl=False)
    elif compare is None:  # with --compare, its report shows each figure
        table = Table("figure", "value", "what")
        for k in sorted({*results, *errors}):
            if k in errors:
                table.add_row(k, "[red]failed[/red]", f"[red]{escape(errors[k])}[/red]")
            else:
                table.add_row(k, fmt(results[k]), escape(descriptions[k]))
        Console().print(table)
    moved = report_drift(results, compare, benchmarks, err if as_json else Console()) \
        if compare is not None else []
    if errors:
        for name, why in sorted(errors.items()):
            err.print(f"error: {name} failed: {why}", style="red", markup=False, highlight=False,
                      soft_wrap=True)
        raise fail(f"{len(errors)} of {len(errors) + len(results)} figures failed",
                   EXIT_FAILED)
    if moved and fail_on_drift:
        raise fail(f"{len(moved)} figures moved beyond their noise band: {', '.join(moved)}",
                   EXIT_FAILED)


def report_drift(results: dict[str, float], path: Path, benchmarks: list[Benchmark],
                 out: Console) -> list[str]:
    """Print each measured figure against its row in `path`, the moved ones last; their names."""
    table = existing_rows(path)
    overrides = {f: b for bench in benchmarks for f, b in bench.noise.items()}
    drifts, missing = drift.compare(results, table, overrides)
    lines = [d.line(table[d.name].commit) for d in drifts if not d.moved]
    lines += [f"new    {name}: {fmt(results[name])} now, no number in {path}" for name in missing]
    lines += [d.line(table[d.name].commit) for d in drifts if d.moved]
    moved = [d.name for d in drifts if d.moved]
    for line in lines:
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    out.print(f"compared with {path}: {len(drifts)} figures, {len(moved)} moved beyond their "
              f"noise band{': ' + ', '.join(moved) if moved else ''}", markup=False,
              highlight=False, soft_wrap=True)
    return moved


def run_selected(chosen: dict[Benchmark, set[str]], err: Console, quick: bool = False
                 ) -> tuple[dict[str, float], dict[str, str]]:
    """Run every chosen benchmark (with its QUICK settings when `quick`): (figures measured,
    figure -> why it failed). A failing figure never stops the others."""
    results: dict[str, float] = {}
    errors: dict[str, str] = {}
    with Progress(TextColumn("bench"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), console=err, transient=True,
                  disable=not err.is_terminal) as bar:
        task = bar.add_task("", total=len(chosen))
        for b, figs in sorted(chosen.items(), key=lambda item: item[0].name):
            bar.update(task, description=f"{b.name} ({len(figs)} figures)")
            measured, failed = b.run(figs, b.quick if quick else None)
            results.update(measured)
            errors.update(failed)
            bar.advance(task)
    return results, errors


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
