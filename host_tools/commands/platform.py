"""`doorctl platform`: the reference platform (ingest, device state, stored events)."""

from __future__ import annotations

import json
import logging
import signal
import threading

import typer
from rich.console import Console
from rich.table import Table

from host_tools.errors import EXIT_UNREACHABLE, EXIT_USAGE, fail
from host_tools.platform.ingest import Platform
from host_tools.platform.store import Store

app = typer.Typer(help="The reference platform: ingest events from door controllers over "
                  "MQTT and keep them in SQLite (or PostgreSQL).", no_args_is_help=True)

DB_HELP = "Database: a SQLite file path or sqlite:///path, or postgresql://user@host/db."


def _broker(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise fail(f"--broker {value!r} is not HOST:PORT, e.g. 127.0.0.1:1883", EXIT_USAGE)
    return host, int(port)


@app.command("run", short_help="Ingest events until Ctrl-C: store once, acknowledge after commit.")
def run(
    broker: str = typer.Option("127.0.0.1:1883", help="MQTT broker as HOST:PORT."),
    db: str = typer.Option("platform.db", help=DB_HELP),
    group: str = typer.Option("ingest", help="Shared-subscription group: instances with the "
                              "same group share the event load."),
    username: str = typer.Option(None, help="Broker user name."),
    password: str = typer.Option(None, help="Broker password (or use an ACL-free loopback)."),
    tls_ca: str = typer.Option(None, help="CA certificate file: connect with TLS."),
) -> None:
    """Ingest events until Ctrl-C: store once per (device, seq), acknowledge after commit,
    track presence and status.

    Examples:
      doorctl platform run --broker 127.0.0.1:1883 --db platform.db
      doorctl platform run --db postgresql://door@db/door --group ingest   # second instance
    """
    host, port = _broker(broker)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    p = Platform(Store(db), host, port, group=group, username=username, password=password,
                 tls_ca=tls_ca).start()
    if not p.connected.wait(10):
        p.stop()
        raise fail(f"cannot reach the MQTT broker at {host}:{port}: is it running? "
                   "(for a local one: mosquitto -p PORT)", EXIT_UNREACHABLE)
    typer.echo(f"platform ingesting from {host}:{port} into {db} (group {group}); Ctrl-C stops")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    p.stop()


@app.command("events")
def events(
    device: str = typer.Argument(..., help="Device id, e.g. hz.b12.d3."),
    db: str = typer.Option("platform.db", help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON array of events."),
) -> None:
    """List a device's stored events, with sequence gaps.

    Example: doorctl platform events hz.b12.d3 --db platform.db
    """
    store = Store(db)
    rows = store.events(device)
    gaps = store.missing(device)
    if as_json:
        keys = ["seq", "code", "boot", "time", "ms", "flags", "arg", "data"]
        typer.echo(json.dumps({"events": [dict(zip(keys, r, strict=True)) for r in rows],
                               "missing": gaps, "ack_upto": store.ack_upto(device)}))
        return
    table = Table("seq", "code", "boot", "time", "flags", "arg", "data")
    for r in rows:
        table.add_row(*(str(x) for x in (r[0], r[1], r[2], r[3], r[5], r[6], r[7])))
    Console().print(table)
    typer.echo(f"acknowledged up to {store.ack_upto(device)}; missing: {gaps or 'none'}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="platform")
