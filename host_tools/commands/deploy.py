"""`doorctl deploy`: put the firmware on a device and prove it arrived intact."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from host_tools.deploy import deploy
from host_tools.errors import EXIT_INTERRUPTED, UserError, fail
from host_tools.ports import pick_port


def deploy_command(
    port: str = typer.Option(None, "--port", "-p", help="Serial port of the device, e.g. "
                             "/dev/ttyUSB0, or the virtual device's console pty (default: the one "
                             "USB serial port found)."),
    romfs: bool = typer.Option(False, "--romfs", help="Put the application into the device's "
                               "ROM partition as one ROMFS image: its bytecode runs from flash, "
                               "not the heap. Reset the device afterwards to run it."),
    force_rom: bool = typer.Option(False, "--force-rom", help="With --romfs: write the image "
                                   "even if the device's matches it (suspected flash damage)."),
    board: str = typer.Option(None, "--board", help="The board module (board/NAME.py) or name "
                              "whose declared files the device gets (default: the one board "
                              "that runs on the device's sys.platform)."),
    as_json: bool = typer.Option(False, "--json", help="Print the deploy manifest as JSON."),
) -> None:
    """Compile the device code to .mpy, stage it as a new set beside the one the device runs (sets/a or sets/b), verify every file's sha256 there, write its manifest, then switch to it in one atomic step (active.json); the set it ran stays as the fallback.

    What is sent is what the device's board module declares (PACKAGES, DEVICE_FILES, ENTRY);
    on an ESP32 its ENTRY becomes main.py, which starts the firmware at boot.
    A Ctrl-C or a power cut at any point leaves the device on its old set or on the new one.
    With --romfs the application (the board's PACKAGES) is written as one image
    into the ROM partition, verified there by sha256 and only then recorded (rom.json); the
    set keeps the board's files. With two ROM partitions the one not in use is written, so a power
    cut during the deploy leaves the device on the image it had.
    Exit codes: 0 deployed, 1 failed, 3 no device or not MicroPython, 5 wrong mpy-cross.

    Examples:

      doorctl deploy --port /dev/ttyUSB0

      doorctl deploy --port /dev/ttyUSB0 --romfs

      doorctl deploy --port "$(jq -r .console door1/vdev.json)" --json
    """  # noqa: E501
    err = Console(stderr=True)
    with Progress(TextColumn("deploy"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), transient=True,
                  console=err, disable=as_json or not err.is_terminal) as bar:
        task = bar.add_task("probing the device", total=None)

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total or 1, description=name)

        try:
            port = pick_port(port)
            result = deploy(port, progress, romfs=romfs, force_rom=force_rom,
                            board_name=board)
        except UserError as e:
            raise fail(str(e), e.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted: the door runs its old set, or the new one if the switch was "
                       "made; run the same command again to finish",
                       EXIT_INTERRUPTED) from None
    if as_json:
        typer.echo(json.dumps(result.manifest, indent=1, sort_keys=True))
    else:
        removed = f", {len(result.removed)} removed" if result.removed else ""
        typer.echo(f"deployed firmware {result.manifest['firmware']} "
                   f"({result.manifest['commit'] or 'no commit'}) to {port}: "
                   f"{len(result.copied)} copied, {len(result.unchanged)} unchanged{removed}, "
                   f"{len(result.files)} verified by sha256")
        if result.rom is not None:
            state = "written" if result.rom["written"] else "unchanged"
            typer.echo(f"ROM image {result.rom['size']} bytes {state}"
                       + ("; reset the device to run it" if result.rom["written"] else ""))


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy_command)
