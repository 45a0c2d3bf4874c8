"""`doorctl platform run`, `events`, `command`: the platform's service, its stored events and
its signed commands to a door."""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from host_tools.cli_inputs import check_broker, known_device, open_store, parse_broker
from host_tools.errors import EXIT_UNREACHABLE, EXIT_USAGE, UserError, fail
from reference_platform.ingest import SUBSCRIPTIONS, Platform
from reference_platform.store import Store

DB_HELP = "Database: a SQLite file path or sqlite:///path, or postgresql://user@host/db."


def _broker(value: str, tls: bool) -> tuple[str, int]:
    """HOST:PORT (or mqtt://, mqtts://) of a broker that answers, speaking TLS when `tls`."""
    try:
        b = parse_broker(value)
        check_broker(b, tls)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    return b.host, b.port


def tls_options(ca: str | None, cert: str | None, key: str | None) -> None:
    """Exit with a one-line message when the TLS options do not go together."""
    if (cert is None) != (key is None):
        raise fail("--tls-cert/--tls-key: give both or neither", EXIT_USAGE)
    if cert is not None and ca is None:
        raise fail("--tls-cert needs --tls-ca (the CA of the broker's certificate)", EXIT_USAGE)
    for opt, path in (("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)):
        if path is not None and not Path(path).is_file():
            raise fail(f"{opt} {path}: cannot be read", EXIT_USAGE)


def run(
    broker: str = typer.Option("127.0.0.1:1883", help="MQTT broker as HOST:PORT "
                               "(or mqtt://HOST:PORT, mqtts://HOST:PORT)."),
    db: str = typer.Option("platform.db", help=DB_HELP),
    group: str = typer.Option("ingest", help="Shared-subscription group: instances with the "
                              "same group share the event load."),
    username: str = typer.Option(None, help="Broker user name."),
    password: str = typer.Option(None, help="Broker password (or use an ACL-free loopback)."),
    tls_ca: str = typer.Option(None, help="CA certificate file: connect with TLS."),
    tls_cert: str = typer.Option(None, help="Client certificate file (PEM), for a broker that "
                                 "requires one; with --tls-key."),
    tls_key: str = typer.Option(None, help="The client certificate's private key (PEM)."),
    keys: Path = typer.Option(None, "--keys", help="Site key file: acknowledgements are signed "
                              "with its command key (commissioned doors free nothing on an unsigned "
                              "one), so is the time (doors trust only a signed one), and doors "
                              "that report an older whitelist are brought up to date."),
    broker_wait: float = typer.Option(0, help="Give up when the broker cannot be reached for this "
                                      "many seconds at start (0: keep trying)."),
    subscription: str = typer.Option("auto", help="How events are received: shared (MQTT 5 "
                                     "`$share`, instances split the load), plain (every instance "
                                     "gets every batch: brokers without shared subscriptions, e.g. "
                                     "RabbitMQ), or auto (probe the broker at each connection)."),
) -> None:
    """Ingest events until Ctrl-C: store once per (device, seq), acknowledge after commit,
    track presence and status.

    Examples:
      doorctl platform run --broker 127.0.0.1:1883 --db platform.db
      doorctl platform run --broker 10.0.0.5:8883 --tls-ca ca.pem --db platform.db
      doorctl platform run --db postgresql://door@db/door --group ingest   # second instance
      doorctl platform run --keys site.json --db platform.db   # signed acknowledgements
    """
    tls_options(tls_ca, tls_cert, tls_key)
    if not broker_wait >= 0:  # NaN too: it would keep trying, never giving up
        raise fail(f"--broker-wait {broker_wait:g}: must be 0 (keep trying) or more seconds", EXIT_USAGE)
    if subscription not in SUBSCRIPTIONS:
        raise fail(f"--subscription {subscription}: use one of {', '.join(SUBSCRIPTIONS)}", EXIT_USAGE)
    try:
        b = parse_broker(broker)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    host, port = b.host, b.port
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        wait_until_reachable(b, tls_ca is not None, broker_wait, done)
    except KeyboardInterrupt:
        raise fail(f"stopped before the MQTT broker at {b} answered", EXIT_UNREACHABLE) from None
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    site_keys = None
    if keys is not None:
        from host_tools.cards import sitekeys
        from reference_platform.commands import command_key

        try:
            site_keys = sitekeys.load(keys, for_doors=True)[0]
            command_key(site_keys)  # every site file that signs has one
        except UserError as e:
            raise fail(str(e), e.exit_code) from None
        except ValueError as e:
            raise fail(f"{keys}: {e}; make a new site key file with `doorctl card keys init`",
                       EXIT_USAGE) from None
    else:
        typer.echo("no --keys: acknowledgements go unsigned, and commissioned doors free nothing "
                   "on them", err=True)
    try:
        store = Store(db)
    except Exception as e:  # sqlite3 / psycopg: not a database, a directory, refused
        raise fail(f"--db {db}: cannot be opened as the platform's database ({e})", EXIT_USAGE) from None
    try:
        p = Platform(store, host, port, group=group, username=username, password=password,
                     tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                     subscription=subscription, site_keys=site_keys,
                     site_keys_reload=(lambda: sitekeys.load(keys, for_doors=True)[0]) if keys else None)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    except (OSError, ValueError) as e:
        raise fail(f"--tls-ca/--tls-cert/--tls-key: cannot be used ({e})", EXIT_USAGE) from None
    if keys is not None:
        from host_tools.commands.platform.registry import open_registry
        from reference_platform.distribute import attach

        try:
            attach(p, open_registry(db, keys))
        except UserError as e:
            raise fail(str(e), e.exit_code) from None
    p.start()
    try:
        reached = wait_for_broker(p, host, port, broker_wait, done)
    except KeyboardInterrupt:
        reached = False
    if not reached:
        p.stop()
        raise fail(f"cannot reach the MQTT broker at {host}:{port}: is it running? "
                   "(for a local one: mosquitto -p PORT)", EXIT_UNREACHABLE)
    typer.echo(f"platform ingesting from {host}:{port} into {db} (group {group}); Ctrl-C stops")
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    p.stop()


RETRY_MAX_S = 30  # the longest wait between two attempts to reach the broker at start


def wait_until_reachable(b: Any, tls: bool, give_up_s: float, stop: threading.Event) -> None:
    """Return once the broker answers on its port. While it does not (not running yet, its
    name not yet known), say so on stderr and try again after 1 s, doubling to RETRY_MAX_S;
    raise the reason after `give_up_s` (> 0) or when stopped. A broker that answers with
    the wrong protocol (TLS against plain MQTT) is an error at once: waiting will not fix it."""
    start = time.monotonic()
    delay = 1.0
    while True:
        try:
            check_broker(b, tls)
            return
        except UserError as e:
            text = str(e)
            if e.exit_code != EXIT_UNREACHABLE or not ("cannot reach" in text or "resolve" in text):
                raise
            if stop.is_set() or (give_up_s and time.monotonic() - start + delay > give_up_s):
                raise
            why = text[text.find("(") + 1:text.find(")")] if "(" in text else text
            typer.echo(f"waiting for the MQTT broker at {b} ({why}); next attempt in "
                       f"{delay:.0f} s, Ctrl-C stops", err=True)
        if stop.wait(delay):
            raise UserError(f"stopped before the MQTT broker at {b} answered", EXIT_UNREACHABLE)
        delay = min(delay * 2, RETRY_MAX_S)


def _unreachable_reason(host: str, port: int) -> str:
    """Why a TCP connection to the broker fails now, in a few words."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=3):
            return "it accepts TCP but has not accepted the MQTT connection"
    except socket.gaierror:
        return f"host {host} not found"
    except TimeoutError:
        return "no answer"
    except OSError as e:
        return (e.strerror or str(e)).lower()


def wait_for_broker(p: Platform, host: str, port: int, give_up_s: float,
                    stop: threading.Event) -> bool:
    """Wait for the platform's first connection, saying what it waits for (on stderr, once per
    change of reason and once a minute); paho retries meanwhile with its backoff (1 s doubling
    to 5 s). False after `give_up_s` (> 0) or when stopped."""
    start = time.monotonic()
    said, said_at = "", 0.0
    while not p.connected.wait(1.0):
        if stop.is_set():
            return False
        waited = time.monotonic() - start
        if give_up_s and waited >= give_up_s:
            return False
        if waited < 2:
            continue
        why = _unreachable_reason(host, port)
        if why != said or time.monotonic() - said_at > 60:
            typer.echo(f"waiting for the MQTT broker at {host}:{port} ({why}); retrying every "
                       f"1-5 s, Ctrl-C stops", err=True)
            said, said_at = why, time.monotonic()
    return True


def events(
    device: str = typer.Argument(..., help="Device id, e.g. hz.b12.d3."),
    db: str = typer.Option("platform.db", help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON array of events."),
) -> None:
    """List a device's stored events, with sequence gaps.

    Example: doorctl platform events hz.b12.d3 --db platform.db
    """
    try:
        store = open_store(db)
        known_device(store, device)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    rows = store.events(device)
    gaps = store.missing(device)
    if as_json:
        keys = ["seq", "code", "boot", "time", "ms", "flags", "arg", "data"]
        typer.echo(json.dumps({"events": [dict(zip(keys, r, strict=True)) for r in rows],
                               "missing": gaps, "ack_upto": store.ack_upto(device)}))
        return
    from wire import codes as ev
    from wire.names import EVENT_NAMES, deny_reason_name

    table = Table("seq", "event", "boot", "time", "flags", "data")
    for r in rows:
        name = EVENT_NAMES.get(r[1], str(r[1]))
        if r[1] == ev.ACCESS_DENIED:
            name += f" ({deny_reason_name(r[6])})"
        elif r[1] == ev.ACCESS_GRANTED:
            name += " (" + {1: "card", 2: "REX", 3: "remote"}.get(r[6], str(r[6])) + ")"
        elif r[6]:
            name += f" [{r[6]}]"
        when = (dt.datetime.fromtimestamp(r[3], dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                if r[5] & 1 else f"{r[3]} s after boot")
        table.add_row(str(r[0]), name, str(r[2]), when, str(r[5]), str(r[7]))
    Console().print(table)
    typer.echo(f"acknowledged up to {store.ack_upto(device)}; missing: {gaps or 'none'}")


def _arg_value(text: str) -> str | int | bool:
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        return text


def command(
    device: str = typer.Argument(..., help="Door (device id), e.g. hz.b12.d3."),
    op: str = typer.Argument(..., help="open | mode | patrol | config | time | keys"),
    arg: list[str] = typer.Option(None, "--arg", help="KEY=VALUE argument, repeatable "
                                  "(e.g. mode=lockdown, unlock_ms=3000)."),
    keys: Path = typer.Option(..., "--keys", help="Site key file (doorctl card keys init): "
                              "its `command` key signs the command."),
    broker: str = typer.Option("127.0.0.1:1883", help="MQTT broker as HOST:PORT (the platform's, "
                               "as for platform run)."),
    timeout: float = typer.Option(10.0, help="Seconds to wait for the door's reply."),
    as_json: bool = typer.Option(False, "--json", help="Print the reply as one JSON object."),
) -> None:
    """Send a signed, short-lived, single-use command to a door and print its reply.

    The door checks it offline (tag, validity window, single use) and answers ok or why not;
    exit code 1 when it refused, 4 when no reply came, 2 at once when no door of that id ever
    announced itself on the broker (a typo).

    Examples:
      doorctl platform command hz.b12.d3 open --keys site.json
      doorctl platform command hz.b12.d3 mode --arg mode=lockdown --keys site.json
      doorctl platform command hz.b12.d3 config --arg unlock_ms=3000 --keys site.json
      doorctl platform command hz.b12.d3 keys --keys site.json   (the door's new key file, sealed)
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from host_tools.cards import sitekeys
    from reference_platform.commands import command_key, sign
    from wire import common
    from wire.platform import decode_register, decode_reply

    if op not in common.COMMANDS:
        raise fail(f"unknown command {op!r}: one of {', '.join(common.COMMANDS)}", EXIT_USAGE)
    try:
        common.check_device_id(device)
    except common.ProtocolError:
        raise fail(f"{device!r} is not a device id (1-64 of A-Z a-z 0-9 - _ .)", EXIT_USAGE) from None
    args: dict[str, str | int | bool] = {}
    for a in arg or []:
        k, sep, v = a.partition("=")
        if not sep or not k:
            raise fail(f"--arg {a!r} is not KEY=VALUE", EXIT_USAGE)
        args[k] = _arg_value(v)
    try:
        data, _ = sitekeys.load(keys, for_doors=True)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    try:
        command_key(data)
    except ValueError as e:
        raise fail(f"{keys}: {e}; make a new site key file with `doorctl card keys init`",
                   EXIT_USAGE) from None
    if op == "keys":
        # this door's key file of the site's current generation, sealed for it alone
        try:
            args = dict(sitekeys.sealed_update(data, device))
        except UserError as e:
            raise fail(str(e), e.exit_code) from None
    host, port = _broker(broker, False)
    cmd_id = "c-" + uuid.uuid4().hex[:16]
    got: dict[str, object] = {}
    holds: dict[str, str] = {}  # the door's retained registration: which keys it holds
    registered = threading.Event()
    register_topic = common.topic(device, "register")
    done = threading.Event()
    subscribed = threading.Event()
    announced = threading.Event()  # the door's retained presence: it exists on this broker
    presence_topic = common.topic(device, "presence")

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == presence_topic:
            if msg.payload:  # an empty retained message is a retired door's cleared presence
                announced.set()
            return
        if msg.topic == register_topic:
            try:
                holds["keys"] = decode_register(msg.payload)["keys"]
            except common.ProtocolError:
                pass
            registered.set()
            return
        try:
            reply = decode_reply(msg.payload)
        except common.ProtocolError:
            return
        if reply.get("id") == cmd_id:
            got.update(reply)
            done.set()

    def on_connect(client: mqtt.Client, *rest: object) -> None:
        client.subscribe([(common.topic(device, "reply"), 1), (presence_topic, 1), (register_topic, 1)])

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda *_: subscribed.set()
    try:
        from reference_platform.broker_acl import apply_env_login

        apply_env_login(client)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    try:
        client.connect(host, port)
    except OSError:
        raise fail(f"cannot reach the MQTT broker at {host}:{port}: is it running?",
                   EXIT_UNREACHABLE) from None
    client.loop_start()
    answered = False
    try:
        known = door_announced(subscribed, announced, min(timeout, SUBSCRIBE_WAIT_S))
        if known:
            # the door's own command key on a per-door site, unless the site file records it
            # as still on the site-wide keys (commissioned before the site moved)
            if sitekeys.per_door(data):
                registered.wait(RETAINED_GRACE_S)  # it follows the presence
            key = sitekeys.signing_key(data, "command", device)  # the site file decides
            claim, recorded = holds.get("keys"), sitekeys.door_scope(data, device)
            if claim is not None and claim != recorded:
                typer.echo(f"warning: {device} registers with {claim} keys, the site file gives it "
                           f"{recorded} keys: signed as the site file says (key_scope_mismatch)", err=True)
            cmd_id, payload = sign(key, device, op, args, cmd_id=cmd_id)
            client.publish(common.topic(device, "cmd"), payload, qos=1)
            answered = done.wait(timeout)
    finally:
        client.loop_stop()
        client.disconnect()
    if known is None:
        raise fail(f"the MQTT broker at {host}:{port} did not confirm the subscription in "
                   f"{min(timeout, SUBSCRIBE_WAIT_S):g} s: is it overloaded?", EXIT_UNREACHABLE)
    if not known:
        raise fail(f"door {device!r}: unknown on the broker at {host}:{port} (it never announced "
                   "itself there: check the id, `doorctl platform doors` lists the doors)", EXIT_USAGE)
    if not answered:
        raise fail(f"no reply from {device} within {timeout:g} s: is it online? "
                   "(doorctl platform run shows presence)", EXIT_UNREACHABLE)
    if as_json:
        typer.echo(json.dumps(got))
    else:
        typer.echo(f"{device}: {op} " + ("done" if got.get("ok") else f"refused: {got.get('reason')}"))
    if not got.get("ok"):
        raise typer.Exit(1)


SUBSCRIBE_WAIT_S = 10.0  # the broker's SUBACK
RETAINED_GRACE_S = 1.0  # after the SUBACK: a retained message follows it (RabbitMQ: a little later)


def door_announced(subscribed: threading.Event, announced: threading.Event,
                   wait_s: float) -> bool | None:
    """Whether the door ever announced itself on the broker: every door leaves a retained
    presence message (online, or its will: offline), delivered right after the SUBACK. None
    when the broker never confirmed the subscription. An id nobody answers to is known at
    once, not after the command's timeout."""
    if not subscribed.wait(wait_s):
        return None
    return announced.wait(RETAINED_GRACE_S)


def register(app: typer.Typer) -> None:
    app.command("run", short_help="Ingest events until Ctrl-C: store once, acknowledge after commit.")(run)
    app.command("events")(events)
    app.command("command")(command)
