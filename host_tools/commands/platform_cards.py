"""`doorctl platform card …`, `doors`, `alarms`, `residence-report`: the platform's card
lifecycle and what it knows of its doors (docs/platform.md)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from firmware import events as ev
from host_tools.errors import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, UserError, fail

card_app = typer.Typer(help="Card lifecycle: issue, lost, unblock, suspend, resume, renew, "
                       "reissue, cancel; each change goes to the doors as a signed update.",
                       no_args_is_help=True)

DB = typer.Option("platform.db", "--db", help="The platform's database (as for platform run).")
KEYS = typer.Option(..., "--keys", help="Site key file: its cache key signs the whitelist.")
BROKER = typer.Option(None, "--broker", help="Send the update to the doors now through this "
                      "broker HOST:PORT (otherwise: doorctl platform sync).")
ALARM_PAIRS = {ev.FORCED_OPEN: None, ev.HELD_OPEN: ev.HELD_OPEN_CLEARED,
               ev.SENSOR_TAMPER: ev.SENSOR_TAMPER_CLEARED, ev.DEVICE_TAMPER: ev.DEVICE_TAMPER_CLEARED,
               ev.CLOSER_FAULT: ev.CLOSER_FAULT_CLEARED, ev.POWER_LOST: ev.POWER_RESTORED,
               ev.JOURNAL_NEAR_FULL: None}


def _registry(db: str, keys: Path) -> Any:
    from host_tools.cards import sitekeys
    from host_tools.platform.cards import CardRegistry
    from host_tools.platform.store import Store

    site, _ = sitekeys.load(keys)
    if "cache" not in site["keys"]:
        raise UserError(f"{keys} has no cache key: make a site key file with doorctl card keys init",
                        EXIT_USAGE)
    return CardRegistry(Store(db), site)


def _date(text: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UserError(f"{what} {text!r} is not a date YYYY-MM-DD", EXIT_USAGE) from None


def _send(reg: Any, broker: str | None) -> str:
    if broker is None:
        return f"whitelist version {reg.version()}; send it with doorctl platform sync"
    from host_tools.platform.distribute import sync
    from host_tools.platform.ingest import Platform

    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--broker {broker!r} is not HOST:PORT", EXIT_USAGE)
    with Platform(reg.store, host, int(port), ingest=False) as p:
        if not p.connected.wait(10):
            raise UserError(f"cannot reach the MQTT broker at {broker}", EXIT_UNREACHABLE)
        import time

        time.sleep(0.5)  # the doors' retained whitelist states arrive
        result = sync(p, reg)
    if not result:
        return f"whitelist version {reg.version()}; no door has reported its whitelist yet"
    return f"whitelist version {reg.version()}: " + ", ".join(f"{d} {r}" for d, r in result.items())


def _op(fn: Any) -> None:
    from host_tools.platform.cards import CardError

    try:
        typer.echo(fn())
    except CardError as e:
        raise fail(str(e), EXIT_FAILED) from None
    except UserError as e:
        raise fail(str(e), e.exit_code) from None


@card_app.command("issue")
def issue(ref: str = typer.Argument(..., help="Card reference (doorctl card personalize)."),
          resident: str = typer.Option(..., help="Resident record id (kept on the platform only)."),
          room: str = typer.Option(..., help="Room, e.g. 301."),
          doors: str = typer.Option(..., help="Door numbers, e.g. 0,3."),
          valid_from: str = typer.Option(..., "--from", help="First day, YYYY-MM-DD."),
          valid_to: str = typer.Option(..., "--to", help="Last day, YYYY-MM-DD."),
          name: str = typer.Option(None, help="Resident's name (platform only, never sent to doors)."),
          master: bool = typer.Option(False, help="Staff card: also opens in lockdown."),
          keys: Path = KEYS, db: str = DB, broker: str = BROKER) -> None:
    """Bind a personalized card to a resident, a room's doors and a validity period.

    Example: doorctl platform card issue 5101013aeef2e95e --resident r-301-1 --room 301
             --doors 0,3 --from 2026-12-01 --to 2027-11-30 --keys site.json --broker 10.0.0.5:1883
    """
    def go() -> str:
        try:
            door_list = [int(d) for d in doors.split(",")]
        except ValueError:
            raise UserError(f"--doors {doors!r}: door numbers separated by commas", EXIT_USAGE) from None
        reg = _registry(db, keys)
        reg.issue(ref, resident, room, door_list, _date(valid_from, "--from"), _date(valid_to, "--to"),
                  master, name)
        return f"issued {ref}; " + _send(reg, broker)
    _op(go)


def _simple(op: str, doc: str) -> None:
    def command(ref: str = typer.Argument(..., help="Card reference."), keys: Path = KEYS,
                db: str = DB, broker: str = BROKER) -> None:
        def go() -> str:
            reg = _registry(db, keys)
            getattr(reg, {"lost": "report_lost"}.get(op, op))(ref)
            return f"{op} {ref}; " + _send(reg, broker)
        _op(go)
    command.__doc__ = doc
    card_app.command(op)(command)


for _name, _doc in (("lost", "Report a card lost: every door refuses it as soon as it gets the update."),
                    ("unblock", "A lost card was found: it opens again."),
                    ("suspend", "Suspend a card at the landlord's request."),
                    ("resume", "End a suspension."),
                    ("cancel", "Cancel a card for good (moving out).")):
    _simple(_name, _doc)


@card_app.command("renew")
def renew(ref: str = typer.Argument(..., help="Card reference."),
          valid_to: str = typer.Option(..., "--to", help="New last day, YYYY-MM-DD."),
          keys: Path = KEYS, db: str = DB, broker: str = BROKER) -> None:
    """Extend a card's validity."""
    def go() -> str:
        reg = _registry(db, keys)
        reg.renew(ref, _date(valid_to, "--to"))
        return f"renewed {ref}; " + _send(reg, broker)
    _op(go)


@card_app.command("reissue")
def reissue(old: str = typer.Argument(..., help="The card being replaced."),
            new: str = typer.Argument(..., help="The new card's reference."),
            keys: Path = KEYS, db: str = DB, broker: str = BROKER) -> None:
    """A new card for the same resident and doors; the old one is cancelled in the same update."""
    def go() -> str:
        reg = _registry(db, keys)
        reg.reissue(old, new)
        return f"reissued {old} as {new}; " + _send(reg, broker)
    _op(go)


@card_app.command("list")
def list_cards(keys: Path = KEYS, db: str = DB,
               as_json: bool = typer.Option(False, "--json", help="One JSON array.")) -> None:
    """The cards the platform has issued, with their state."""
    def go() -> str:
        cards = _registry(db, keys).cards()
        if as_json:
            return json.dumps(cards)
        table = Table("card", "status", "room", "doors", "valid", "version")
        epoch = dt.date(1970, 1, 1)
        for c in cards:
            table.add_row(c["ref"], c["status"], c["room"],
                          ",".join(str(d) for d in range(16) if c["doors"] >> d & 1),
                          f"{epoch + dt.timedelta(days=c['valid_from'])} .. "
                          f"{epoch + dt.timedelta(days=c['valid_to'])}", str(c["changed_in"]))
        Console().print(table)
        return f"{len(cards)} cards"
    _op(go)


def sync_command(keys: Path = KEYS, db: str = DB,
                 broker: str = typer.Option("127.0.0.1:1883", help="Broker HOST:PORT.")) -> None:
    """Bring every door to the latest whitelist (retries what did not get through).

    Example: doorctl platform sync --keys site.json --broker 10.0.0.5:1883
    """
    _op(lambda: _send(_registry(db, keys), broker))


def alarm_rows(store: Any, device: str | None) -> list[dict[str, Any]]:
    """Alarms with their door, start and end (None while active), from stored events."""
    out: list[dict[str, Any]] = []
    for d in [device] if device else store.devices():
        open_: dict[int, dict[str, Any]] = {}
        for e in store.events(d):
            code, t = e[1], e[3]
            if code in ALARM_PAIRS:
                rec = {"door": d, "alarm": ev.NAMES[code], "start": t, "end": None, "seq": e[0]}
                out.append(rec)
                if ALARM_PAIRS[code] is not None:
                    open_[code] = rec
                else:
                    rec["end"] = t
            for raised, cleared in ALARM_PAIRS.items():
                if cleared == code and raised in open_:
                    open_.pop(raised)["end"] = t
        info = store.device(d) or {}
        if info.get("online") is False:
            out.append({"door": d, "alarm": "offline", "start": info.get("presence_at"), "end": None,
                        "seq": None})
    return out


def alarms(device: str = typer.Option(None, "--door", help="One door (default: all)."), db: str = DB,
           as_json: bool = typer.Option(False, "--json", help="One JSON array.")) -> None:
    """Alarms of the doors (held-open, forced-open, tamper, closer fault, power, journal near
    full, offline) with their start and end.

    Example: doorctl platform alarms --door hz.b12.d3
    """
    from host_tools.platform.store import Store

    rows = alarm_rows(Store(db), device)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("door", "alarm", "start (UTC)", "end")

    def when(t: Any) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if t else "-"
    for r in rows:
        table.add_row(r["door"], r["alarm"], when(r["start"]), when(r["end"]) if r["end"] else "ACTIVE")
    Console().print(table)


def registered_as(reg: dict[str, Any] | None) -> str:
    """One cell: site, door number, lock, card profiles, TLS, firmware (or "-": not registered)."""
    if reg is None:
        return "-"
    tls = ("mutual TLS" if reg["client_cert"] else "TLS") if reg["tls"] else "no TLS"
    return (f"site {reg['site']} door {reg['door']}, {reg['lock']}, {'+'.join(reg['cards'])}, "
            f"{tls}, fw {reg['fw']}")


def doors(db: str = DB, as_json: bool = typer.Option(False, "--json", help="One JSON array."),
          keys: Path = typer.Option(None, "--keys",
                                    help="Site key file: show each door's whitelist lag.")) -> None:
    """Each door: what it registered as (site, door number, lock, card profiles, TLS, firmware),
    online, door state and mode from its last patrol, whitelist version and lag,
    events not yet stored (backlog), active alarms.

    Example: doorctl platform doors --db platform.db --keys site.json
    """
    from host_tools.platform.store import Store

    store = Store(db)
    latest = _registry(db, keys).version() if keys is not None else None
    out: list[dict[str, Any]] = []
    for d in store.devices():
        info = store.device(d) or {}
        status = info.get("status") or {}
        active = [r["alarm"] for r in alarm_rows(store, d) if r["end"] is None]
        version = status.get("cache_version")
        reg = store.registration(d)
        out.append({"door": d, "registration": reg, "online": info.get("online"), "state": status.get("door"),
                    "mode": status.get("mode"), "last_patrol": info.get("status_at"),
                    "whitelist": version,
                    "lag": (latest - version) if latest is not None and version is not None else None,
                    "backlog": max(0, int(status.get("seq") or 0) - int(info.get("ack_upto") or 0)),
                    "alarms": active})
    if as_json:
        typer.echo(json.dumps(out))
        return
    table = Table("door", "registered as", "online", "state", "mode", "last patrol", "whitelist", "lag",
                  "backlog", "alarms")
    for r in out:
        patrol = (dt.datetime.fromtimestamp(r["last_patrol"], dt.UTC).strftime("%H:%M:%S")
                  if r["last_patrol"] else "-")
        table.add_row(r["door"], registered_as(r["registration"]), "yes" if r["online"] else "NO",
                      str(r["state"]), str(r["mode"]), patrol,
                      str(r["whitelist"]), "-" if r["lag"] is None else str(r["lag"]), str(r["backlog"]),
                      ", ".join(r["alarms"]) or "-")
    Console().print(table)


def residence(card: str = typer.Option(..., "--card", help="Card reference."),
              start: str = typer.Option(..., "--from", help="First day, YYYY-MM-DD."),
              end: str = typer.Option(..., "--to", help="Last day, YYYY-MM-DD."),
              db: str = DB, as_json: bool = typer.Option(False, "--json", help="One JSON object.")) -> None:
    """Days with at least one entry per month for one card, from stored events only (school
    enrolment evidence). Run by the platform operator for the resident or with their consent;
    it shows counts of days, no times and no doors (docs/platform.md).

    Example: doorctl platform residence-report --card 5101013aeef2e95e --from 2026-01-01 --to 2026-12-31
    """
    from host_tools.platform.cards import CardError, residence_report
    from host_tools.platform.store import Store

    try:
        report = residence_report(Store(db), card, _date(start, "--from"), _date(end, "--to"))
    except CardError as e:
        raise fail(str(e), EXIT_USAGE) from None
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    if as_json:
        typer.echo(json.dumps({"card": card, "days_with_entry": report}))
        return
    for month, n in report.items():
        typer.echo(f"{month}  {n:2d} days with an entry")


def register(app: typer.Typer) -> None:
    from host_tools.commands.platform import app as platform_app

    platform_app.add_typer(card_app, name="card")
    platform_app.command("sync")(sync_command)
    platform_app.command("alarms")(alarms)
    platform_app.command("doors")(doors)
    platform_app.command("residence-report")(residence)
