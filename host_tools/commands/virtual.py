"""`doorctl virtual`: run a virtual door controller on this computer."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import typer

from host_tools.errors import EXIT_NO_DEVICE, fail
from host_tools.vdev.device import VirtualDevice, VirtualDeviceError

app = typer.Typer(
    help="""Run a virtual door controller: the real firmware in a MicroPython (unix port)
process, with simulated flash and door I/O.

It prints three addresses:

  console  a pty speaking the MicroPython raw REPL; use it like a USB board:
           mpremote connect <console> fs ls  /  doorctl deploy --port <console>

  io       127.0.0.1:PORT, the door I/O channel (JSON lines: set door contact, REX, tamper,
           fire, power; receive relay/buzzer/LED changes with timestamps; docs/virtual-device.md)

  reader   127.0.0.1:PORT, the PN532 reader UART as a TCP byte stream
""",
    no_args_is_help=True,
)


@app.command("run")
def run(
    state: Path = typer.Option(..., "--state", help="Directory holding the device's flash images "
                               "(created if missing; reuse it to keep the device's data)."),
    heap: str = typer.Option("128K", help="MicroPython heap size, e.g. 64K or 128K."),
    io_port: int = typer.Option(0, help="TCP port of the I/O channel (0: any free port)."),
    reader_port: int = typer.Option(0, help="TCP port of the reader UART (0: any free port)."),
    source: bool = typer.Option(False, "--source", help="Import the repo's .py sources instead "
                                "of compiled .mpy (slower start, more RAM)."),
    as_json: bool = typer.Option(False, "--json", help="Print the addresses as one JSON line."),
) -> None:
    """Start a virtual door controller and keep it running until Ctrl-C.

    Example: doorctl virtual run --state ./door1
    """
    dev = VirtualDevice(state, heap=heap, io_port=io_port or None,
                        reader_port=reader_port or None, from_source=source)
    try:
        dev.start()
    except VirtualDeviceError as e:
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
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            if not dev.alive() and not done.is_set():
                done.wait(1.0)  # a reboot in progress restarts the process
                if not dev.alive():
                    dev.stop()
                    raise fail(f"the virtual device stopped: {dev.stderr_tail()}", EXIT_NO_DEVICE)
    except KeyboardInterrupt:
        pass
    dev.stop()


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="virtual")
