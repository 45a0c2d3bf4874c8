"""`doorctl platform card …`, `doors`, `alarms`, `residence-report`: the platform's card
lifecycle and what it knows of its doors (docs/platform.md)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Column, Table

from host_tools.cli_inputs import check_broker, known_device, open_store, parse_broker
from host_tools.commands.platform.registry import open_registry
from host_tools.errors import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, UserError, fail
from wire import codes as ev
from wire.names import EVENT_NAMES

card_app = typer.Typer(help="Card lifecycle: issue, lost, unblock, suspend, resume, renew, "
                       "reissue, cancel; each change goes to the doors as a signed update.",
                       no_args_is_help=True)

DB = typer.Option("platform.db", "--db", help="The platform's database (as for platform run).")
KEYS = typer.Option(..., "--keys", help="Site key file: its cache key signs the whitelist.")
BROKER = typer.Option(None, "--broker", help="Send the update to the doors now through this "
                      "broker HOST:PORT (otherwise: doorctl platform sync).")
# Each alarm and the event that ends it (None: an instant). A forced door stays forced until
# it closes; a door whose parts disagree (setup_fault) until it boots without the fault.
ALARM_PAIRS = {ev.SETUP_FAULT: ev.BOOT, ev.FORCED_OPEN: ev.DOOR_CLOSED, ev.HELD_OPEN: ev.HELD_OPEN_CLEARED,
               ev.SENSOR_TAMPER: ev.SENSOR_TAMPER_CLEARED, ev.DEVICE_TAMPER: ev.DEVICE_TAMPER_CLEARED,
               ev.CLOSER_FAULT: ev.CLOSER_FAULT_CLEARED, ev.POWER_LOST: ev.POWER_RESTORED,
               ev.JOURNAL_NEAR_FULL: None}


def _date(text: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UserError(f"{what} {text!r} is not a date YYYY-MM-DD", EXIT_USAGE) from None


def _period(start: str, end: str) -> tuple[dt.date, dt.date]:
    first, last = _date(start, "--from"), _date(end, "--to")
    if last < first:
        raise UserError(f"--from {start} is after --to {end}", EXIT_USAGE)
    return first, last


class Outcome(str):
    """A command's printed line, with what `--json` prints: the whitelist version and each
    door's result; `failed` when some door did not take the update."""

    failed = False
    version: int | None = None
    doors: dict[str, str] | None = None


def _send(reg: Any, broker: str | None) -> str:
    if broker is None:
        out = Outcome(f"whitelist version {reg.version()}; send it with doorctl platform sync")
        out.version = reg.version()
        return out
    from reference_platform.distribute import sync
    from reference_platform.ingest import Platform

    b = parse_broker(broker)
    check_broker(b, False)
    with Platform(reg.store, b.host, b.port, ingest=False, site_keys=reg.site) as p:
        if not p.connected.wait(10):
            raise UserError(f"cannot reach the MQTT broker at {b}", EXIT_UNREACHABLE)
        import time

        time.sleep(0.5)  # the doors' retained whitelist states arrive
        result = sync(p, reg)
    out = Outcome(f"whitelist version {reg.version()}: "
                  + ", ".join(f"{d} {r}" for d, r in result.items()) if result else
                  f"whitelist version {reg.version()}; no door has reported its whitelist yet")
    out.failed = any(r.startswith("failed") for r in result.values())
    out.version, out.doors = reg.version(), result
    return out


def _op(fn: Any, as_json: bool = False) -> None:
    """Print the command's line (or JSON); exit 1 when a door did not take the update (the
    line says which and why), as for any other failure."""
    from reference_platform.cards import CardError
    from reference_platform.distribute import DistributionError

    try:
        text = fn()
    except CardError as e:
        raise fail(str(e), EXIT_FAILED) from None
    except DistributionError as e:
        raise fail(f"the whitelist update could not be sent: {e.reason}", EXIT_FAILED) from None
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    if as_json and isinstance(text, Outcome):
        typer.echo(json.dumps({"done": str(text), "version": text.version, "doors": text.doors,
                               "failed": text.failed}))
    else:
        typer.echo(text)
    if getattr(text, "failed", False):
        raise fail("a door did not take the update (see above); doorctl platform sync retries it",
                   EXIT_FAILED)


def _then(done: str, sent: str) -> str:
    out = Outcome(done + sent)
    out.failed = getattr(sent, "failed", False)
    out.version, out.doors = getattr(sent, "version", None), getattr(sent, "doors", None)
    return out


JSON = typer.Option(False, "--json", help="Print the outcome as one JSON object.")


@card_app.command("issue")
def issue(ref: str = typer.Argument(..., help="Card reference (doorctl card personalize)."),
          resident: str = typer.Option(..., help="Resident record id (kept on the platform only)."),
          room: str = typer.Option(..., help="Room, e.g. 301."),
          doors: str = typer.Option(..., help="Door numbers, e.g. 0,3."),
          valid_from: str = typer.Option(..., "--from", help="First day, YYYY-MM-DD."),
          valid_to: str = typer.Option(..., "--to", help="Last day, YYYY-MM-DD."),
          name: str = typer.Option(None, help="Resident's name (platform only, never sent to doors)."),
          master: bool = typer.Option(False, help="Staff card: also opens in lockdown."),
          keys: Path = KEYS, db: str = DB, broker: str = BROKER, as_json: bool = JSON) -> None:
    """Bind a personalized card to a resident, a room's doors and a validity period.

    Example: doorctl platform card issue 5101013aeef2e95e --resident r-301-1 --room 301
             --doors 0,3 --from 2026-12-01 --to 2027-11-30 --keys site.json --broker 10.0.0.5:1883
    """
    def go() -> str:
        try:
            door_list = [int(d) for d in doors.split(",")]
        except ValueError:
            raise UserError(f"--doors {doors!r}: door numbers separated by commas", EXIT_USAGE) from None
        first, last = _period(valid_from, valid_to)
        reg = open_registry(db, keys)
        reg.issue(ref, resident, room, door_list, first, last, master, name)
        return _then(f"issued {ref}; ", _send(reg, broker))
    _op(go, as_json)


def _simple(op: str, doc: str) -> None:
    def command(ref: str = typer.Argument(..., help="Card reference."), keys: Path = KEYS,
                db: str = DB, broker: str = BROKER, as_json: bool = JSON) -> None:
        def go() -> str:
            reg = open_registry(db, keys)
            getattr(reg, {"lost": "report_lost"}.get(op, op))(ref)
            return _then(f"{op} {ref}; ", _send(reg, broker))
        _op(go, as_json)
    command.__doc__ = (f"{doc}\n\nExample: doorctl platform card {op} 5101013aeef2e95e "
                       "--keys site.json --broker 10.0.0.5:1883")
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
          keys: Path = KEYS, db: str = DB, broker: str = BROKER, as_json: bool = JSON) -> None:
    """Extend a card's validity.

    Example: doorctl platform card renew 5101013aeef2e95e --to 2028-11-30 --keys site.json
    """
    def go() -> str:
        reg = open_registry(db, keys)
        reg.renew(ref, _date(valid_to, "--to"))
        return _then(f"renewed {ref}; ", _send(reg, broker))
    _op(go, as_json)


@card_app.command("reissue")
def reissue(old: str = typer.Argument(..., help="The card being replaced."),
            new: str = typer.Argument(..., help="The new card's reference."),
            keys: Path = KEYS, db: str = DB, broker: str = BROKER, as_json: bool = JSON) -> None:
    """A new card for the same resident and doors; the old one is cancelled in the same update.

    Example: doorctl platform card reissue 5101013aeef2e95e 51010177c0ffee00 --keys site.json
    """
    def go() -> str:
        reg = open_registry(db, keys)
        reg.reissue(old, new)
        return _then(f"reissued {old} as {new}; ", _send(reg, broker))
    _op(go, as_json)


@card_app.command("list")
def list_cards(keys: Path = KEYS, db: str = DB,
               as_json: bool = typer.Option(False, "--json", help="One JSON array.")) -> None:
    """The cards the platform has issued, with their state.

    Example: doorctl platform card list --keys site.json --db platform.db
    """
    def go() -> str:
        cards = open_registry(db, keys).cards()
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
                 broker: str = typer.Option("127.0.0.1:1883", help="Broker HOST:PORT."),
                 as_json: bool = JSON) -> None:
    """Bring every door to the latest whitelist (retries what did not get through).
    Exit code 1 when a door did not take it (the line says which door and why).

    Example: doorctl platform sync --keys site.json --broker 10.0.0.5:1883
    """
    _op(lambda: _send(open_registry(db, keys), broker), as_json)


def alarm_rows(store: Any, device: str | None) -> list[dict[str, Any]]:
    """Alarms with their door, start and end (None while active), from stored events."""
    from reference_platform import scope_alarms

    out: list[dict[str, Any]] = []
    disputed = scope_alarms.disputes(store)
    for d in [device] if device else store.devices():
        if d in disputed:
            # its registration claims other keys than the site file gives it (forged on the
            # broker, or a key file the site file does not know): signed by the site file
            out.append({"door": d, "alarm": "key_scope_mismatch", "start": disputed[d]["at"],
                        "end": None, "seq": None, "claim": disputed[d]["claim"],
                        "record": disputed[d]["record"]})
        open_: dict[int, dict[str, Any]] = {}
        for e in store.events(d):
            code, t = e[1], e[3]
            for raised, cleared in ALARM_PAIRS.items():
                if cleared == code and raised in open_:
                    open_.pop(raised)["end"] = t
            if code in ALARM_PAIRS:
                rec = {"door": d, "alarm": EVENT_NAMES[code], "start": t, "end": None, "seq": e[0]}
                out.append(rec)
                if ALARM_PAIRS[code] is not None:
                    open_.setdefault(code, rec)
                else:
                    rec["end"] = t
        for gap in store.lost(d):
            # Events the door lost (its ring overflowed while it could not deliver): the
            # time span is where they lie, between the stored events around them.
            out.append({"door": d, "alarm": "events_lost", "start": gap["after"],
                        "end": gap["before"], "seq": gap["first"], "last_seq": gap["last"],
                        "count": gap["count"]})
        info = store.device(d) or {}
        if "clock_unset" in ((info.get("status") or {}).get("setup") or ()):
            # The door's last report says its clock holds no time it could verify: it runs its
            # offline policy (cards refused with clock_unset) until the platform's signed time.
            out.append({"door": d, "alarm": "clock_unset", "start": info.get("status_at"),
                        "end": None, "seq": None})
        if info.get("online") is False:
            out.append({"door": d, "alarm": "offline", "start": info.get("presence_at"), "end": None,
                        "seq": None})
    return out


def alarms(device: str = typer.Option(None, "--door", help="One door (default: all)."), db: str = DB,
           as_json: bool = typer.Option(False, "--json", help="One JSON array.")) -> None:
    """Alarms of the doors (held-open, forced-open, tamper, closer fault, power, journal near
    full, parts that disagree, clock unset, offline, a registration claiming other keys than
    the site file gives the door: key_scope_mismatch) with their start and end, and events a
    door lost (events_lost: how many, and the time span they lie in).

    Example: doorctl platform alarms --door hz.b12.d3
    """
    try:
        store = open_store(db)
        if device is not None:
            known_device(store, device, "--door")
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    rows = alarm_rows(store, device)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("door", "alarm", "start (UTC)", "end")

    def when(t: Any) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if t else "-"
    for r in rows:
        if r["alarm"] == "events_lost":
            table.add_row(r["door"], f"events_lost ({r['count']}: seq {r['seq']}-{r['last_seq']})",
                          when(r["start"]), when(r["end"]))
            continue
        table.add_row(r["door"], r["alarm"], when(r["start"]), when(r["end"]) if r["end"] else "ACTIVE")
    Console().print(table)
    active = sum(1 for r in rows if r["end"] is None and r["alarm"] != "events_lost")
    typer.echo(f"{active} active of {len(rows)}")


def registered_as(reg: dict[str, Any] | None) -> str:
    """One cell: site, door number, lock, card profiles, TLS, firmware (or "-": not registered)."""
    if reg is None:
        return "-"
    tls = ("mutual TLS" if reg["client_cert"] else "TLS") if reg["tls"] else "no TLS"
    return (f"site {reg['site']} door {reg['door']}, {reg['lock']}, {'+'.join(reg['cards'])}, "
            f"{tls}, fw {reg['fw']}")


def door_rows(store: Any, latest: int | None, expected: str | None = None) -> list[dict[str, Any]]:
    """What `platform doors` shows, per door. Active alarms are those the door's last patrol
    reports and those its events leave open; `lag` is None when unknown and `ahead` says the
    door holds a version the platform never issued (an installer's file, say); `differs` that
    it holds the latest version with other cards (its content hash is not `expected`, the
    platform's: docs/cache-format.md, "Content hash")."""
    out: list[dict[str, Any]] = []
    for d in store.devices():
        info = store.device(d) or {}
        status = info.get("status") or {}
        rows = alarm_rows(store, d)
        active = [r["alarm"] for r in rows if r["end"] is None and r["alarm"] != "events_lost"]
        active += [a for a in status.get("alarms") or [] if a not in active]
        version = status.get("cache_version")
        ahead = latest is not None and version is not None and version > latest
        held = status.get("cache_hash")
        differs = bool(expected and held and version == latest and held != expected)
        out.append({"door": d, "registration": store.registration(d), "online": info.get("online"),
                    "state": status.get("door"), "mode": status.get("mode"),
                    "last_patrol": info.get("status_at"), "whitelist": version,
                    "lag": (latest - version) if latest is not None and version is not None
                    and not ahead else None, "ahead": ahead, "whitelist_hash": held,
                    "differs": differs,
                    "backlog": max(0, int(status.get("seq") or 0) - int(info.get("ack_upto") or 0)),
                    "lost": sum(int(r["count"]) for r in rows if r["alarm"] == "events_lost"),
                    "alarms": sorted(set(active), key=active.index)})
    return out


DOOR_ID_SHOWN = 25  # characters of a door id in the 80-column view


def shown_id(door: str, width: int = DOOR_ID_SHOWN) -> str:
    """A door id in at most `width` characters: a longer one keeps its start (the site,
    the building) and its end (the door), joined by an ellipsis."""
    if len(door) <= width:
        return door
    tail = (width - 1) // 2
    return door[:width - 1 - tail] + "…" + door[-tail:]


def doors(db: str = DB, as_json: bool = typer.Option(False, "--json", help="One JSON array."),
          keys: Path = typer.Option(None, "--keys",
                                    help="Site key file: show each door's whitelist lag."),
          detail: bool = typer.Option(False, "--detail", help="Also what each door registered as "
                                      "(site, door number, lock, cards, TLS, firmware) and its "
                                      "last patrol; wider than 80 columns.")) -> None:
    """Each door: online, door state and mode from its last patrol, whitelist version and lag,
    events not yet stored (backlog), events the door lost (lost), active alarms; with --detail
    also what it registered as
    and when it last reported.

    Example: doorctl platform doors --db platform.db --keys site.json
    """
    try:
        store = open_store(db)
        registry = open_registry(db, keys) if keys is not None else None
        latest = registry.version() if registry is not None else None
        expected = registry.content_hash() if registry is not None and latest else None
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    out = door_rows(store, latest, expected)
    if as_json:
        typer.echo(json.dumps(out))
        return
    # The door id is what the operator types next: shown whole up to DOOR_ID_SHOWN characters,
    # a longer one keeps both ends (--detail and --json show it whole); short columns keep
    # their headers, the state and the alarms wrap.
    ids = {r["door"]: r["door"] if detail else shown_id(r["door"]) for r in out}
    table = Table(Column("door", no_wrap=True, min_width=max([len(i) for i in ids.values()] + [4])),
                  Column("on", no_wrap=True), Column("state", overflow="fold", min_width=6),
                  Column("mode", overflow="fold", min_width=6),
                  *(Column(h, no_wrap=True) for h in ("list", "lag", "backlog", "lost")),
                  Column("alarms", overflow="fold", min_width=11),
                  box=None if not detail else box.HEAVY_HEAD, pad_edge=False,
                  padding=(0, 1) if detail else (0, 1, 0, 0))
    if detail:
        table.add_column("registered as", no_wrap=True)
        table.add_column("last patrol", no_wrap=True)
    for r in out:
        lag = ("ahead" if r["ahead"] else "differs" if r["differs"] else "-" if r["lag"] is None
               else str(r["lag"]))
        row = [ids[r["door"]], "yes" if r["online"] else "NO", str(r["state"] or "-"), str(r["mode"] or "-"),
               "-" if r["whitelist"] is None else f"v{r['whitelist']}", lag, str(r["backlog"]),
               str(r["lost"]), "\n".join(r["alarms"]) or "-"]
        if detail:
            row.append(registered_as(r["registration"]))
            row.append(dt.datetime.fromtimestamp(r["last_patrol"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
                       if r["last_patrol"] else "-")
        table.add_row(*row)
    Console(width=240 if detail else 80).print(table)
    if any(r["ahead"] for r in out):
        typer.echo("ahead: the door holds a whitelist the platform never issued (installer's file)")
    if any(r["differs"] for r in out):
        typer.echo("differs: the latest version, other cards (content hash): sync replaces them")
    if any(ids[d] != d for d in ids):
        typer.echo("…: a long door id, shortened in the middle (--detail or --json show it whole)")


def retire(door: str = typer.Argument(..., help="The old device id, e.g. hz.b12.d3-old."),
           db: str = DB,
           broker: str = typer.Option(None, "--broker", help="Also clear the door's "
                                      "retained messages on this broker HOST:PORT.")) -> None:
    """Retire a door id the platform no longer hears from (a door re-commissioned under a new
    id, a door removed): it leaves `doors` and `alarms`; its stored events stay as evidence.
    A door still online is refused.

    Example: doorctl platform retire hz.b12.d3-old --db platform.db --broker 10.0.0.5:1883
    """
    try:
        store = open_store(db)
        known_device(store, door)
        if (store.device(door) or {}).get("online"):
            raise UserError(f"{door} is online: stop the door (or re-commission it) before retiring "
                            "its id", EXIT_USAGE)
        if broker is not None:
            _clear_retained(door, broker)
        store.retire(door)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    typer.echo(f"retired {door}: no longer listed; its {store.count(door)} events are kept")


def _clear_retained(door: str, broker: str) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from wire import common

    b = parse_broker(broker)
    check_broker(b, False)
    from reference_platform.broker_acl import apply_env_login

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    apply_env_login(client)
    client.connect(b.host, b.port)
    client.loop_start()
    try:
        for leaf in ("presence", "register", "status", "cache_state", "log"):
            client.publish(common.topic(door, leaf), b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


def residence(card: str = typer.Option(..., "--card", help="Card reference."),
              start: str = typer.Option(..., "--from", help="First day, YYYY-MM-DD."),
              end: str = typer.Option(..., "--to", help="Last day, YYYY-MM-DD."),
              db: str = DB, as_json: bool = typer.Option(False, "--json", help="One JSON object.")) -> None:
    """Days with at least one entry per month for one card, from stored events only (school
    enrolment evidence). Run by the platform operator for the resident or with their consent;
    it shows counts of days, no times and no doors (docs/platform.md). A card the platform
    never issued and never saw is refused, not reported as zero days.

    Example: doorctl platform residence-report --card 5101013aeef2e95e --from 2026-01-01 --to 2026-12-31
    """
    from reference_platform.cards import CardError, incomplete_months, known_card, residence_report

    try:
        first, last = _period(start, end)
        store = open_store(db)
        if not known_card(store, card):
            raise UserError(f"--card {card}: the platform in {db} never issued or saw this card",
                            EXIT_USAGE)
        report = residence_report(store, card, first, last)
        incomplete = incomplete_months(store, first, last)
    except CardError as e:
        raise fail(str(e), EXIT_USAGE) from None
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    if as_json:
        typer.echo(json.dumps({"card": card, "days_with_entry": report, "incomplete": incomplete}))
        return
    for month, n in report.items():
        note = "  INCOMPLETE: a door lost events this month" if month in incomplete else ""
        typer.echo(f"{month}  {n:2d} days with an entry{note}")


def keys_progress(keys: Path = typer.Option(..., "--keys", help="Site key file (its versions and "
                                            "generation; no key is read from it)."),
                  db: str = DB,
                  as_json: bool = typer.Option(False, "--json", help="One JSON object.")) -> None:
    """Key rotation progress of the site: doors per key file generation, cards per key version.

    Example: doorctl platform keys --keys site.json --db platform.db
    """
    from host_tools.cards import sitekeys
    from reference_platform.keyprogress import progress, summary

    try:
        site, _ = sitekeys.load(keys, for_doors=True)
        p = progress(open_store(db), site)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    if as_json:
        typer.echo(json.dumps(p))
    else:
        for line in summary(p):
            typer.echo(line)


def register(app: typer.Typer) -> None:
    app.add_typer(card_app, name="card")
    app.command("sync")(sync_command)
    app.command("alarms")(alarms)
    app.command("doors")(doors)
    app.command("keys")(keys_progress)
    app.command("residence-report")(residence)
    app.command("retire")(retire)
