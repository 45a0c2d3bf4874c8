"""`doorctl selftest`, `doorctl logs`: check a commissioned door item by item; read its log."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from host_tools.console import call, check_port, handshake, mpremote
from host_tools.errors import EXIT_FAILED, EXIT_USAGE, UserError, fail

# The deploy manifest, read in small pieces (the heap beside a running firmware is fragmented).
MANIFEST = """
import json
try:
    s = json.loads(open('active.json').read())['active'] + '/'
except Exception:
    s = ''
print('SET ' + s)
try:
    f = open(s + 'deploy.json')
except OSError:
    f = None
print('MANIFEST-BEGIN')
while f:
    b = f.read(256)
    if not b:
        break
    print(b, end='')
print('')
print('MANIFEST-END')
"""

def _item(name: str, ok: bool | None, detail: str) -> dict[str, Any]:
    return {"item": name, "result": "pass" if ok else ("skip" if ok is None else "fail"),
            "detail": detail}


def broker_detail(r: dict[str, Any]) -> str:
    """The broker item's detail: connected (with TLS and how), or why not, as the door logged it."""
    if r.get("connected"):
        if not r.get("tls"):
            return "connected (no TLS)"
        return "connected with TLS (broker certificate checked" + (
            ", client certificate)" if r.get("client_cert") else ")")
    why = str(r.get("uplink_error") or "")
    if why.startswith("TLS"):
        n = int(r.get("tls_failures") or 0)
        return why + (f" ({n} TLS failures)" if n > 1 else "")
    return "not connected: check the broker address, TLS and credentials" + (
        f" (last: {why})" if why else "")


def evaluate(r: dict[str, Any], hashes: dict[str, str] | None) -> list[dict[str, Any]]:
    """Pass/fail/skip per item from the door's self-report (and the deployed files' hashes)."""
    items = [_item("firmware", bool(r.get("firmware")) and bool(r.get("ready")),
                   f"version {r.get('firmware')}, running" if r.get("ready") else "not running")]
    deployed = r.get("deployed")
    if deployed is None or hashes is None:
        items.append(_item("deployed files", None, "no deploy.json on the door (not deployed "
                           "with doorctl deploy)"))
    else:
        bad = sorted(p for p, h in deployed.items() if hashes.get(p) != h)
        items.append(_item("deployed files", not bad, f"{len(deployed)} files match deploy.json"
                           if not bad else f"changed since deploy: {', '.join(bad[:5])}"))
    clock = r.get("clock")
    items.append(_item("clock", clock is not None and abs(clock - time.time()) < 120,
                       "set by the platform" if clock else "not set (no platform time yet)"))
    free, total = r.get("flash_free"), r.get("flash_total")
    items.append(_item("flash space", free is not None and free > 64 * 1024,
                       f"{free // 1024} KiB free of {(total or 0) // 1024} KiB"
                       if free is not None else "unknown"))
    keys = r.get("keys") or []
    items.append(_item("key store", {"door_read", "card_ref", "cache"} <= set(keys),
                       f"slots {', '.join(keys)}" if keys else "no keys.json (commission the door)"))
    items.append(setup_item(r))
    door = r.get("door")
    alarms = r.get("alarms") or []
    sensor = [a for a in alarms if a in ("sensor_tamper",)]
    items.append(_item("door contact", door is not None and not sensor,
                       f"{door}; loop supervised" + (f"; ALARM {sensor[0]}" if sensor else "")))
    inputs = r.get("inputs") or {}
    items.append(_item("REX", inputs.get("rex") is False, "released" if inputs.get("rex") is False
                       else f"reads {inputs.get('rex')!r} (stuck pressed or not wired)"))
    items.append(_item("tamper", inputs.get("tamper") is False, "lid closed" if inputs.get("tamper")
                       is False else "tamper switch open: close the lid"))
    items.append(_item("card reader", reader_linked(r), str(r.get("reader"))))
    if r.get("broker"):
        items.append(_item("broker", r.get("connected"), broker_detail(r)))
        j = r.get("journal") or [0, 0, 0]
        items.append(_item("platform", bool(clock) and j[2] > 0, "acknowledges events "
                           f"(up to {j[2]}), sent the time" if clock and j[2] else "no answer yet"))
    else:
        items.append(_item("broker", None, "no broker configured"))
    err = r.get("cache_error")
    items.append(_item("whitelist", not err and bool(r.get("cache_version")),
                       f"version {r.get('cache_version')}" if not err else str(err)))
    return items


SETUP_TEXT = {
    "keys_site": "keys.json is for site {key_site}, config.json for site {site}: commission again",
    "no_keys": "commissioned without a usable keys.json: commission again",
    "keys_door": "keys.json is another door's (per-door keys): commission this door again "
                 "with its own --device-id",
    "whitelist_refused": "the door refuses its whitelist ({cache_error}): commission with this "
                         "site's whitelist, or let the platform send it",
}


def setup_item(r: dict[str, Any]) -> dict[str, Any]:
    """Keys, configuration and whitelist belong together (the door's own check at boot,
    firmware/setup_check.py problems); the clock has its own item."""
    problems = r.get("setup")
    if problems is None:
        return _item("door setup", None, "firmware too old to check (doorctl deploy)")
    bad = [p for p in problems if p != "clock_unset"]
    if not bad:
        return _item("door setup", True, "keys, configuration and whitelist agree")
    fields = {k: r.get(k) for k in ("key_site", "site", "cache_error")}
    return _item("door setup", False,
                 "; ".join(SETUP_TEXT.get(p, p).format(**fields) for p in bad))


def reader_linked(r: dict[str, Any]) -> bool:
    """The door's card task found its PN532 (it reports "pn532 vX.Y"; else "absent")."""
    return str(r.get("reader")).startswith("pn532")


def settled(r: dict[str, Any]) -> bool:
    """The door is running with its reader linked, and with a broker configured, connected, its
    clock set by the platform and its events acknowledged: what a door that has just restarted
    still lacks (its reader link comes up on its own time, after the uplink on a busy door)."""
    if not r.get("ready") or not reader_linked(r):
        return False
    if not r.get("broker"):
        return True
    j = r.get("journal") or [0, 0, 0]
    return bool(r.get("connected") and r.get("clock") and j[2] > 0)


def selftest(
    port: str = typer.Option(None, "--port", "-p", help="The door's serial port (or a virtual "
                             "door's pty; default: the one USB serial port found)."),
    relay: str = typer.Option("ask", "--relay", help="Relay pulse check: ask (the installer "
                              "confirms the click), io:HOST:PORT (a virtual door's I/O channel "
                              "watches it) or skip."),
    report: Path = typer.Option(Path("."), "--report-dir", help="Where the commissioning report "
                                "(JSON and text) is saved."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    wait: float = typer.Option(0, "--wait", help="A door that has just restarted: give it up to "
                               "this many seconds to be running, its reader linked, connected and "
                               "acknowledged by the platform before the items are judged."),
) -> None:
    """Check a commissioned door item by item: firmware and deployed files, clock, flash, keys,
    door contact and its supervision, REX, tamper, reader, broker, platform, whitelist, and a
    relay pulse. Saves a commissioning report (JSON and text). Exit code 1 if an item fails.

    Examples:
      doorctl selftest -p /dev/ttyUSB0
      doorctl selftest -p /dev/ttyUSB0 --wait 60   # just after a restart
      doorctl selftest -p /dev/pts/4 --relay io:127.0.0.1:40123 --json
    """
    from host_tools.deploy import probe, set_files
    from host_tools.ports import pick_port

    try:
        port = pick_port(port)
        check_port(port)
        handshake(port)
        err = Console(stderr=True)
        if wait < 0:
            raise UserError(f"--wait {wait:g}: must be 0 or more seconds", EXIT_USAGE)
        deadline = time.monotonic() + wait
        with err.status("asking the door", spinner="dots"):
            info = probe(port)
            while True:
                r = call(port, "self_report")
                if settled(r) or time.monotonic() >= deadline:
                    break
                time.sleep(1.0)
        raw = mpremote(port, "exec", MANIFEST)
        head, _, rest = raw.partition("MANIFEST-BEGIN")
        text = rest.split("MANIFEST-END", 1)[0].strip()
        root = next((x[4:].strip().rstrip("/") for x in head.splitlines()
                     if x.startswith("SET ")), "")
        try:
            r["deployed"] = json.loads(text).get("files") if text else None
        except ValueError:
            r["deployed"] = None
        # The active set's files by their path inside it, as its manifest names them.
        hashes = {**info.files, **set_files(info.files, root)}
        items = evaluate(r, hashes)
        items.append(_relay_check(port, relay, err))
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    failed = [i for i in items if i["result"] == "fail"]
    doc = {"device_id": r.get("device_id"), "port": port,
           "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "passed": not failed, "items": items}
    report.mkdir(parents=True, exist_ok=True)
    stem = report / f"commissioning-{r.get('device_id') or 'door'}"
    Path(f"{stem}.json").write_text(json.dumps(doc, indent=1))
    lines = [f"Commissioning report: {doc['device_id']} on {port}, {doc['time']}", ""]
    lines += [f"{i['result'].upper():5} {i['item']:15} {i['detail']}" for i in items]
    lines += ["", "PASSED" if not failed else f"FAILED: {len(failed)} item(s)"]
    Path(f"{stem}.txt").write_text("\n".join(lines) + "\n")
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        table = Table("item", "result", "detail", title=f"self-test of {doc['device_id']}")
        for i in items:
            colour = {"pass": "green", "fail": "red", "skip": "yellow"}[i["result"]]
            table.add_row(i["item"], f"[{colour}]{i['result']}[/{colour}]", i["detail"])
        Console().print(table)
        typer.echo(("all items passed" if not failed else f"{len(failed)} item(s) failed")
                   + f"; report saved to {stem}.json and .txt")
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _relay_check(port: str, how: str, err: Console) -> dict[str, Any]:
    if how == "skip":
        return _item("lock relay", None, "not checked (--relay skip)")
    if how.startswith("io:"):
        from host_tools.vdev.io_client import IOChannelError, VirtualIO

        host, _, p = how[3:].rpartition(":")
        if not host or not p.isdigit():
            raise UserError(f"--relay {how!r}: use io:HOST:PORT", EXIT_USAGE)
        try:
            with VirtualIO((host, int(p))) as io:
                before = len(io.outputs("relay"))
                call(port, "relay_test", 300)
                try:
                    io.wait_output("relay", not io.state()["outputs"]["relay"], timeout_s=3)
                except IOChannelError:
                    pass
                changes = io.outputs("relay")[before:]
        except (OSError, IOChannelError) as e:
            return _item("lock relay", False, f"no I/O channel at {host}:{p} ({e}): the address "
                         "changes when the virtual door restarts, see its vdev.json")
        return _item("lock relay", len(changes) >= 2, f"pulsed: {len(changes)} changes seen "
                     "on the relay output" if changes else "no change seen on the relay output")
    if how != "ask":
        raise UserError(f"--relay {how!r}: ask, io:HOST:PORT or skip", EXIT_USAGE)
    call(port, "relay_test", 1000)
    ok = typer.confirm("The lock relay was pulsed for 1 s: did the lock release and lock again?")
    return _item("lock relay", ok, "confirmed by the installer" if ok else "the lock did not move")


def log_records(port: str) -> list[dict[str, Any]]:
    """The door's log lines with wall-clock times: the door's clock when the platform set it
    (`clock` "door"), else this computer's (`clock` "host", as read now)."""
    got = call(port, "log_lines")
    door_now = None if got["now"] is None else float(got["now"])
    host_now = time.time()
    records = []
    for age, stamp, text in got["lines"]:
        at = (door_now if door_now is not None else host_now) - int(age) / 1000
        records.append({"time": dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds"),
                        "uptime_ms": int(stamp) if stamp.isdigit() else None, "text": text,
                        "clock": "door" if door_now is not None else "host"})
    return records


def _log_line(rec: dict[str, Any]) -> str:
    when = dt.datetime.fromisoformat(rec["time"]).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"{when}{'' if rec['clock'] == 'door' else '~'} {rec['text']}"


def logs(port: str = typer.Option(None, "--port", "-p", help="The door's serial port (default: "
                                  "the one USB serial port found)."),
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until "
                                     "Ctrl-C."),
         as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Print the door's own log (its last few lines, 256 characters: boots, connections,
    refusals; never keys), with wall-clock times in this computer's time zone (`~` after the
    time: the door's clock is not set yet, the time is this computer's).

    Examples:
      doorctl logs -p /dev/ttyUSB0
      doorctl logs -p /dev/ttyUSB0 --follow
    """
    from host_tools.ports import pick_port

    try:
        port = pick_port(port)
        check_port(port)
        handshake(port)
        seen: set[tuple[int | None, str]] = set()
        while True:
            for rec in log_records(port):
                key = (rec["uptime_ms"], rec["text"])
                if key in seen:
                    continue
                seen.add(key)
                typer.echo(json.dumps(rec) if as_json else _log_line(rec))
            if not follow:
                break
            time.sleep(1.0)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    app.command("selftest")(selftest)
    app.command("logs")(logs)
