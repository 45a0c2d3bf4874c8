"""`doorctl torture`: the seeded fault-injection run over a virtual door, a small-ring door,
mosquitto and the platform (docs/torture.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from host_tools.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_MISSING_TOOL, EXIT_USAGE, fail


def torture(
    seed: int = typer.Option(1, help="The schedule's seed: the same seed runs the same faults "
                             "in the same order."),
    minutes: float = typer.Option(2.0, help="How long faults are injected (then every fault is "
                                  "healed, the doors deliver and the verdict is given)."),
    work: Path = typer.Option(None, help="Keep the run's flash images, logs and database here "
                              "(default: a temporary folder, kept only when the run fails)."),
    image: str = typer.Option("pypi", help="The doors' MicroPython: pypi (the PyPI interpreter) "
                              "or unix32 (the 32-bit firmware image, built first when missing)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the verdict."),
) -> None:
    """Power cuts, broker stops and kills, TCP drops, platform kills, a journal overflowing
    under an outage and a hostile publisher on every door topic, drawn from SEED; then every
    event must be at the platform once and in order or inside a reported gap of the right
    size, and the valid card must open the door again.

    Examples:
      doorctl torture --seed 7 --minutes 2
      doorctl torture --seed 7 --minutes 30 --work /tmp/t7     # keep what it made
      doorctl torture --seed 7 --minutes 10 --image unix32     # on the firmware image
    """
    if not 0 < minutes <= 24 * 60:  # NaN too: its schedule would never end
        raise fail(f"--minutes {minutes}: give a duration above 0 and at most a day", EXIT_USAGE)
    if image not in ("pypi", "unix32"):
        raise fail(f"--image {image}: choose pypi or unix32", EXIT_USAGE)
    if work is not None:
        try:
            work.mkdir(parents=True, exist_ok=True)
            if any(work.iterdir()):
                raise fail(f"--work {work}: not empty; give a new or empty folder", EXIT_USAGE)
        except OSError as e:  # a file, or where no folder can be made
            raise fail(f"--work {work}: cannot be used ({e.strerror or e})", EXIT_USAGE) from None
    from host_tools.services.mosquitto import BrokerError
    from host_tools.torture.rig import Settings, run

    say = (lambda s: None) if quiet else typer.echo
    typer.echo(f"torture run: seed {seed}, {minutes:g} min of faults, doors on the {image} image")
    try:
        report = run(Settings(seed=seed, minutes=minutes, image=image), work, say)
    except KeyboardInterrupt:
        raise fail("interrupted: every process the run started is stopped", EXIT_INTERRUPTED) from None
    except BrokerError as e:
        raise fail(str(e), EXIT_MISSING_TOOL) from None
    typer.echo(report.summary())
    if not report.ok:
        typer.echo(report.failure(), err=True)
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("torture", short_help="Seeded fault injection over doors, broker and platform; "
                "checks nothing is lost.")(torture)
