"""`doorctl mcu`: run scripts on the bare-metal image (QEMU MPS2-AN385, Cortex-M3)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from host_tools.errors import EXIT_USAGE, UserError, fail

app = typer.Typer(
    help="""Run scripts on the bare-metal image under qemu-system-arm.

The image is build/mcu/firmware.elf (`doorctl build mcu`, built here when missing or out of
date). The script runs from reset with the firmware frozen in, no console input, and
`mps2.insn()` counting instructions exactly; docs/mcu.md.
""",
    no_args_is_help=True,
)


@app.command("run")
def run(
    script: Path = typer.Argument(..., help="A MicroPython script to run on the board."),
    args: list[str] = typer.Argument(None, help="Its sys.argv[1:]."),
    heap: str = typer.Option("64K", "--heap", help="The MicroPython heap (8K..4M)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds before the run is stopped."),
) -> None:
    """Run SCRIPT on the board; prints its output and exits with its status.

    Example: doorctl mcu run check.py --heap 64K
    """
    from host_tools.image.mcu import build_mcu, is_current
    from host_tools.image.qemu import parse_size, run_source
    from host_tools.image.steps import Steps

    try:
        source = script.read_bytes()
    except OSError as e:
        raise fail(f"cannot read {script}: {e.strerror}", EXIT_USAGE) from None
    try:
        size = parse_size(heap)
        image = build_mcu(Steps(quiet=is_current()))
        result = run_source(image.elf, source, list(args or []), size, timeout, name=script.name)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    sys.stdout.write(result.output)
    sys.stdout.flush()
    raise typer.Exit(result.status)


@app.command("check-bench")
def check_bench(
    table: Path = typer.Option(Path("BENCHMARKS.md"), "--table",
                               help="The benchmark table holding the counts to hold."),
) -> None:
    """Measure the mcu instruction counts and fail when one grew more than 5 % over its row in
    TABLE (figures not in the table yet are only reported). CI runs this: a change that makes
    the firmware slower on purpose updates the table in the same change.

    Example: doorctl mcu check-bench --table BENCHMARKS.md
    """
    from host_tools.benchmarks import mcu as bench_mcu
    from host_tools.commands.bench import existing_rows

    if not table.is_file():
        raise fail(f"benchmark table {table} not found", EXIT_USAGE)
    rows = {k: v[0] for k, v in existing_rows(table).items()}
    got = bench_mcu.run(set(bench_mcu.FIGURES))
    errors = [f"{k}: {v}" for k, v in got.items() if isinstance(v, Exception)]
    if errors:
        raise fail("mcu benchmark failed: " + "; ".join(errors))
    measured = {k: float(v) for k, v in got.items() if not isinstance(v, Exception)}
    failures, notes = bench_mcu.check_growth(measured, rows)
    for line in notes:
        typer.echo(line)
    if failures:
        for line in failures[:-1]:
            typer.secho(f"error: {line}", err=True, fg=typer.colors.RED)
        raise fail(failures[-1])


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="mcu")
