"""`doorctl demo`: watch a virtual door controller work, end to end, on this computer."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from hil.broker import Mosquitto
from host_tools.errors import EXIT_MISSING_TOOL, fail
from host_tools.platform.ingest import Platform
from host_tools.platform.store import Store
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))
DEVICE_ID = "demo.b1.d1"
EVENT_NAMES = {1: "access_granted", 2: "access_denied", 40: "boot", 41: "time_set", 254: "gap"}


def _wait(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def demo(
    keep: bool = typer.Option(False, help="Keep everything running at the end until Ctrl-C."),
    state: Path = typer.Option(None, help="State directory for the device (default: temporary)."),
    pace: float = typer.Option(1.0, help="Seconds to pause between steps, so you can follow."),
) -> None:
    """Start a broker, the reference platform and a virtual door controller, then play a
    short scenario: commissioning, door I/O, a power cut, and every event reaching the
    platform exactly once.

    Example: doorctl demo
    """
    con = Console()
    t0 = time.monotonic()

    def step(msg: str) -> None:
        con.print(f"[dim]{time.monotonic() - t0:6.2f}s[/dim]  {msg}")
        time.sleep(pace)

    with tempfile.TemporaryDirectory(prefix="doorctl-demo-") as tmp:
        work = Path(tmp)
        try:
            broker = Mosquitto().start()
        except RuntimeError as err:
            raise fail(str(err), EXIT_MISSING_TOOL) from None
        step(f"MQTT broker (mosquitto) on {broker.host}:{broker.port}")
        platform = Platform(Store(str(work / "platform.db")), broker.host, broker.port).start()
        step("reference platform ingesting into SQLite")
        dev = VirtualDevice(state or work / "door").start()
        step(f"virtual door controller up: console {dev.pty}, I/O {dev.io_addr[1]}")
        try:
            cfg = json.dumps({"device_id": DEVICE_ID,
                              "broker": {"host": broker.host, "port": broker.port}})
            subprocess.run([MPREMOTE, "connect", dev.pty, "exec",
                            f"import os\nwith open('config.json.tmp', 'w') as f: f.write({cfg!r})"
                            "\nos.rename('config.json.tmp', 'config.json')"],
                           check=True, capture_output=True, timeout=30)
            step(f"commissioned over the console with mpremote: device id {DEVICE_ID}")
            dev.restart()
            store = platform.store
            _wait(lambda: bool((store.device(DEVICE_ID) or {}).get("online")))
            step("[green]device online at the platform[/green] (presence, retained)")
            with VirtualIO(dev.io_addr) as io:
                io.set_input("door_contact", "open")
                io.set_input("door_contact", "closed")
                io.set_input("rex", True)
                io.set_input("rex", False)
                st = io.state()
                step(f"door I/O channel: inputs {st['inputs']}, outputs {st['outputs']}")
            dev.kill()
            step("[red]power cut[/red] (process killed; flash keeps what was written)")
            _wait(lambda: (store.device(DEVICE_ID) or {}).get("online") is False)
            step("platform sees the device offline (last will)")
            dev.restart()
            _wait(lambda: [e[1] for e in store.events(DEVICE_ID)].count(41) >= 2)
            step("device powered up again: boot counter advanced, journal resent what was pending")
            table = Table("seq", "event", "boot", "time", title="events stored at the platform")
            for ev in store.events(DEVICE_ID):
                when = (time.strftime("%H:%M:%S", time.localtime(ev[3])) if ev[5] & 1
                        else f"{ev[3]} s after boot")
                table.add_row(str(ev[0]), EVENT_NAMES.get(ev[1], str(ev[1])), str(ev[2]), when)
            con.print(table)
            step(f"platform acknowledged up to seq {store.ack_upto(DEVICE_ID)}; "
                 f"missing: {store.missing(DEVICE_ID) or 'none'}")
            if keep:
                con.print(f"running: mpremote connect {dev.pty} repl   (Ctrl-C to stop)")
                while True:
                    time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            dev.stop()
            platform.stop()
            broker.stop()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
