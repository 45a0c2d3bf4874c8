"""`doorctl demo`: watch a virtual door controller work, end to end, on this computer."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from host_tools.cards import vcard
from host_tools.cards.kit import SiteKit
from host_tools.errors import EXIT_MISSING_TOOL, EXIT_NO_DEVICE, EXIT_USAGE, fail
from host_tools.pn532_emu import LocalCard, PN532Emulator
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice, VirtualDeviceError
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import provision
from offline_cache import fmt
from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire import codes as events
from wire.names import EVENT_NAMES, deny_reason_name

DEVICE_ID = "demo.b1.d1"
SITE = 1001


def describe(code: int, arg: int) -> str:
    name = EVENT_NAMES.get(code, str(code))
    if code == events.ACCESS_DENIED:
        return f"{name} ({deny_reason_name(arg)})"
    if code == events.ACCESS_GRANTED:
        return f"{name} ({ {1: 'card', 2: 'REX', 3: 'remote'}.get(arg, arg)})"
    return name


def _site_and_cards() -> tuple[SiteKit, dict[str, vcard.VirtualDesfire], bytes]:
    """Site keys, three virtual cards (one reported lost, one a clone) and a signed whitelist."""
    site = SiteKit(SITE)
    cards, refs = {}, {}
    for name in ("resident", "lost"):
        cards[name], refs[name] = site.issue()
    cards["clone"] = vcard.clone_of(cards["resident"])
    snap = site.snapshot(1, [(refs["resident"], fmt.ACTIVE, False), (refs["lost"], fmt.LOST, False)],
                         doors=0x0001)
    return site, cards, snap


def _wait(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Until `cond`; a step that never comes stops the demo with one line, not a story that
    goes on without it (a swipe shown refused because its decision came late)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise fail(f"the demo stopped: {what} did not come within {timeout:.0f} s")
        time.sleep(0.05)


def demo(
    keep: bool = typer.Option(False, help="Keep everything running at the end until Ctrl-C."),
    state: Path = typer.Option(None, help="State directory for the device (default: temporary)."),
    pace: float = typer.Option(1.0, help="Seconds to pause between steps, so you can follow."),
) -> None:
    """Start a broker, the reference platform and a virtual door controller, then play a
    short scenario: commissioning with keys and a signed whitelist, a resident's card, a
    clone and a lost card, a held-open alarm, a power cut, and every event reaching the
    platform exactly once.

    Example: doorctl demo
    """
    if not 0 <= pace < 3600:  # NaN passes `pace < 0`; time.sleep refuses it and infinity
        raise fail(f"--pace {pace:g}: must be 0 or more seconds, under an hour", EXIT_USAGE)
    if state is not None:
        try:
            state.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise fail(f"--state {state}: cannot be used ({e.strerror or e})", EXIT_USAGE) from None
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
        platform: Platform | None = None
        dev = VirtualDevice(state or work / "door")
        try:  # whatever fails from here on, what was started is stopped
            step(f"MQTT broker (mosquitto) on {broker.host}:{broker.port}")
            platform = Platform(Store(str(work / "platform.db")), broker.host, broker.port).start()
            step("reference platform ingesting into SQLite")
            try:
                dev.start()
            except VirtualDeviceError as e:  # its state folder in use, say
                raise fail(str(e), EXIT_NO_DEVICE) from None
            step(f"virtual door controller up: console {dev.pty}, I/O {dev.io_addr[1]}")
            site, cards, snap = _site_and_cards()
            platform.ack_key = site.command_key  # signed acks (the door frees events) and times
            step("site keys made; 2 DESFire EV2 cards personalized (one reported lost), 1 clone made")
            provision(dev.pty, config=site.door_config(
                          DEVICE_ID, broker={"host": broker.host, "port": broker.port},
                          door={"unlock_ms": 2000, "prealarm_ms": 2000, "held_open_ms": 3000}),
                      keys=site.door_keys(), cache=snap)
            step(f"commissioned over the console with mpremote: {DEVICE_ID}, door keys, "
                 f"signed whitelist ({len(snap)} bytes)")
            dev.restart()
            store = platform.store
            _wait(lambda: bool((store.device(DEVICE_ID) or {}).get("online")), "the door online")
            step("[green]device online at the platform[/green] (presence, retained); "
                 "clock set by the platform")
            emu = PN532Emulator()
            with emu.connect(dev.reader_addr), VirtualIO(dev.io_addr) as io:
                _wait(lambda: str(io.status().get("reader", "")).startswith("pn532"), "the card reader")
                _wait(lambda: bool(io.status().get("clock_synced")), "the clock set")

                def swipe(name: str) -> None:
                    _wait(lambda: io.state()["outputs"].get("led") == "off", "the door idle")
                    t = io.set_input("rex", False)
                    emu.present(LocalCard(cards[name].process, cards[name].uid))
                    _wait(lambda: any(e.value in ("green", "red") for e in io.outputs("led")
                                      if e.device_ms >= t), f"the {name} card's decision")
                    opened = any(e.value for e in io.outputs("relay") if e.device_ms >= t)
                    emu.remove()
                    ms = io.status().get("card_ms")
                    if opened:
                        step(f"[green]{name} card: door unlocked[/green] (card step + decision {ms} ms)")
                    else:
                        step(f"[red]{name} card: refused[/red], LED red")
                    time.sleep(0.3)

                def press(name: str, *values: Any) -> None:
                    for v in values:  # each value held past the 50 ms input debounce
                        io.set_input(name, v)
                        time.sleep(0.2)

                swipe("resident")
                press("door_contact", "open", "closed")
                step("door opened and closed: relocked at once (anti-tailgating)")
                swipe("clone")
                swipe("lost")
                press("rex", True, False)
                press("door_contact", "open")
                step("REX pressed, door opened ... and left open")
                io.wait_output("buzzer", True, timeout_s=10)
                time.sleep(3.2)
                step("[red]held-open alarm[/red] at the door (buzzer, LED) and as an event")
                press("door_contact", "closed")
                step("door closed: alarm cleared")
            dev.kill()
            step("[red]power cut[/red] (process killed; flash keeps what was written)")
            _wait(lambda: (store.device(DEVICE_ID) or {}).get("online") is False, "the door offline")
            step("platform sees the device offline (last will)")
            dev.restart()
            _wait(lambda: [e[1] for e in store.events(DEVICE_ID)].count(41) >= 2, "the second boot's events")
            step("device powered up again: boot counter advanced, journal resent what was pending")
            table = Table("seq", "event", "boot", "time", title="events stored at the platform")
            for ev in store.events(DEVICE_ID):
                when = (time.strftime("%H:%M:%S", time.localtime(ev[3])) if ev[5] & 1
                        else f"{ev[3]} s after boot")
                table.add_row(str(ev[0]), describe(ev[1], ev[6]), str(ev[2]), when)
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
            if platform is not None:
                platform.stop()
            broker.stop()


def register(app: typer.Typer) -> None:
    app.command("demo", short_help="A broker, the platform and a virtual door play a live scenario.")(demo)
