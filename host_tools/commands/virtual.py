"""`doorctl virtual`: run a virtual door controller on this computer."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import typer

from host_tools.errors import EXIT_NO_DEVICE, EXIT_USAGE, fail
from host_tools.vdev.device import (
    DEFAULT_HEAP,
    DEFAULT_HEAP_UNIX32,
    IMAGES,
    VirtualDevice,
    VirtualDeviceError,
)

app = typer.Typer(
    help="""Run a virtual door controller: the real firmware in a MicroPython
(unix port) process, with simulated flash, door I/O and reader link.

`doorctl virtual run --state DIR` prints three addresses (also in DIR/vdev.json):

console: a pty speaking the MicroPython raw REPL, used like a USB board:
mpremote connect PTY fs ls | exec | run | soft-reset | reset,
doorctl deploy --port PTY. Ctrl-C interrupts a running program;
mpremote reset reboots the process on the same pty and flash.

io: 127.0.0.1:PORT, the door I/O channel, JSON lines: set the door contact
(closed/open/short/cut), REX, tamper, fire and power inputs; receive relay,
buzzer and LED changes with device timestamps; ask for firmware status.

reader: 127.0.0.1:PORT, the PN532 reader UART as a TCP byte stream.

Flash: DIR holds the flash images (littlefs at /flash, the working
directory). A new DIR is a blank board; the same DIR again boots with its
data. Code runs from the repository (compiled .mpy) unless something is
deployed to /flash/lib, which comes first after a reset.
Details: docs/virtual-device.md.
""",
    no_args_is_help=True,
)


@app.command("run")
def run(
    state: Path = typer.Option(..., "--state", help="Directory holding the device's flash images "
                               "(created if missing; reuse it to keep the device's data)."),
    heap: str = typer.Option(None, help=f"MicroPython heap size, e.g. 192K or 512K (default "
                             f"{DEFAULT_HEAP} on pypi, {DEFAULT_HEAP_UNIX32} on unix32; "
                             "docs/virtual-device.md)."),
    image: str = typer.Option("pypi", "--image", help="The interpreter: pypi (the PyPI 64-bit "
                              "unix port, code from .mpy files) or unix32 (the 32-bit firmware "
                              "image with the application frozen in; built into build/ when "
                              "missing or stale, see doorctl build unix32)."),
    io_port: int = typer.Option(0, help="TCP port of the I/O channel (0: any free port)."),
    reader_port: int = typer.Option(0, help="TCP port of the reader UART (0: any free port)."),
    source: bool = typer.Option(False, "--source", help="Import the repo's .py sources instead "
                                "of compiled .mpy (slower start, more RAM)."),
    as_json: bool = typer.Option(False, "--json", help="Print the addresses as one JSON line."),
) -> None:
    """Start a virtual door controller and keep it running until Ctrl-C.

    Examples: doorctl virtual run --state ./door1

      doorctl virtual run --state ./door1 --image unix32
    """
    if image not in IMAGES:
        raise fail(f"unknown image {image!r}: choose pypi (the PyPI 64-bit interpreter) or unix32 "
                   "(the 32-bit firmware image, doorctl build unix32)", EXIT_USAGE)
    for opt, value in (("--io-port", io_port), ("--reader-port", reader_port)):
        if not 0 <= value < 65536:
            raise fail(f"{opt} {value}: must be 0-65535 (0: any free port)", EXIT_USAGE)
    try:
        state.mkdir(parents=True, exist_ok=True)
        probe = state / ".writable"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise fail(f"--state {state}: cannot be used as the device's directory "
                   f"({e.strerror or e})", EXIT_USAGE) from None
    try:
        dev = VirtualDevice(state, heap=heap, io_port=io_port or None,
                            reader_port=reader_port or None, from_source=source, image=image)
    except (ValueError, VirtualDeviceError) as e:
        raise fail(str(e), EXIT_USAGE) from None
    done = threading.Event()
    # Ctrl-C and SIGTERM both end the loop below, whenever they come (even during start-up).
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        dev.start()
    except VirtualDeviceError as e:
        dev.stop()
        raise fail(str(e), EXIT_NO_DEVICE) from None
    info = dev.describe()
    if as_json:
        typer.echo(json.dumps(info))
    else:
        typer.echo(f"console  {info['console']}")
        typer.echo(f"io       {info['io']}")
        typer.echo(f"reader   {info['reader']}")
        typer.echo(f"state    {info['state']}   (addresses also in vdev.json there)")
        typer.echo("Ctrl-C stops the device.")
    while not done.wait(0.5):
        if not dev.alive():
            done.wait(1.0)  # a reboot in progress restarts the process
            if not done.is_set() and not dev.alive():
                dev.stop()
                raise fail(f"the virtual device stopped ({dev.last_error()}); output in "
                           f"{dev.state_dir}/console.log and stderr.log", EXIT_NO_DEVICE)
    dev.stop()


ADDRESSES = ("console", "io", "reader")


@app.command("address")
def address(
    which: str = typer.Argument("console", help="console (the pty), io or reader."),
    state: Path = typer.Option(..., "--state", help="The state directory the device runs on."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for the device to be up."),
) -> None:
    """Print one address of the virtual device running on DIR, once it is up (waiting for a
    device just started): for scripts, and the installer guide's steps.

    Example: PORT=$(doorctl virtual address console --state door1)
    """
    import os
    import time

    if which not in ADDRESSES:
        raise fail(f"{which!r}: one of {', '.join(ADDRESSES)}", EXIT_USAGE)
    if not timeout >= 0:  # NaN too: it never passes the deadline
        raise fail(f"--timeout {timeout:g}: must be 0 or more seconds", EXIT_USAGE)
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = json.loads((state / "vdev.json").read_text())
            pid = int(info["pid"])
            os.kill(pid, 0)
            if Path(str(info["console"])).exists():
                typer.echo(str(info[which]))
                return
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if time.monotonic() >= deadline:
            raise fail(f"no virtual device running on {state} (after {timeout:g} s): start it with "
                       f"doorctl virtual run --state {state}", EXIT_NO_DEVICE)
        time.sleep(0.2)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="virtual")
