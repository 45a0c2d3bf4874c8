"""`doorctl card`: site keys, card personalization, reading a card as the door does, virtual cards."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from host_tools.errors import EXIT_FAILED, EXIT_NO_DEVICE, EXIT_USAGE, UserError, fail

card_app = typer.Typer(help="Site keys, card issuing, and card checks through a PC/SC reader.",
                       no_args_is_help=True)
keys_app = typer.Typer(help="Create site keys and the door's key file (keys are never printed).",
                       no_args_is_help=True)
card_app.add_typer(keys_app, name="keys")

KEYS_OPT = typer.Option(..., "--keys", "-k", help="Site key file (from `doorctl card keys init`).")
READER_OPT = typer.Option(None, "--reader", "-r", help="Part of the reader name (default: the first reader).")
WAIT_OPT = typer.Option(10.0, "--wait", help="Seconds to wait for a card on the reader.")


def _connect(reader: str | None, wait: float) -> tuple[object, Callable[[bytes], bytes]]:
    """The card on the reader, waiting up to `wait` seconds for one to be placed."""
    from host_tools.cards import pcsc

    if wait < 0:
        raise UserError(f"--wait {wait:g}: must be 0 or more seconds", EXIT_USAGE)
    deadline = time.monotonic() + wait
    while True:  # a reader pcscd has just found, then a card on it
        try:
            pcsc.find_reader(reader)
            break
        except UserError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
    return pcsc.wait_for_card(reader, timeout=max(0.0, deadline - time.monotonic()))  # type: ignore[arg-type]


def _run(fn: Callable[[], None]) -> None:
    try:
        fn()
    except UserError as e:
        raise fail(str(e), e.exit_code) from None


@keys_app.command("init")
def keys_init(
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the site key file (mode 0600)."),
    site_id: int = typer.Option(..., "--site-id", help="The site's number, 0..4294967295."),
    system_id: str = typer.Option(None, "--system-id",
                                  help="Diversification system identifier, text (default: DOOR + site id)."),
    force: bool = typer.Option(False, "--force",
                               help="Replace an existing file (its cards become unreadable)."),
    door_rekey: bool = typer.Option(False, "--door-rekey/--no-door-rekey",
                                    help="Issue cards that doors may move to a new key version at "
                                         "their next swipe (see docs/threat-model.md)."),
) -> None:
    """Create a site key file with fresh random keys.

    Example: doorctl card keys init --out site.json --site-id 1001
    """
    from host_tools.cards import sitekeys

    def go() -> None:
        data = sitekeys.new_site_keys(site_id, system_id.encode() if system_id else None, door_rekey)
        sitekeys.write_secret(out, data, force)
        typer.echo(f"wrote site keys for site {site_id} to {out}; keep it offline and backed up "
                   f"(doorctl commission --keys {out} gives each door its copy without the "
                   "card-issuing key)")

    _run(go)


@keys_app.command("door")
def keys_door(
    keys: Path = KEYS_OPT,
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the door key file (mode 0600)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing file."),
    device_id: str = typer.Option(None, "--device-id", help="The door's id (hz.b12.d3): on a "
                                  "per-door site the file holds that door's own keys."),
) -> None:
    """Write the door's key file: the site keys without the application master key, and on a
    per-door site the door's own command and cache keys (for a door commissioned by other
    means; `doorctl commission --keys site.json` does this itself).

    Example: doorctl card keys door --keys site.json --device-id hz.b12.d3 --out door-keys.json
    """
    from host_tools.cards import sitekeys

    def go() -> None:
        data, _ = sitekeys.load(keys, need_issuing=True)
        if device_id is not None:
            from wire import common

            try:
                common.check_device_id(device_id)
            except common.ProtocolError:
                raise UserError(f"--device-id {device_id!r}: use 1-64 of A-Z a-z 0-9 - _ .",
                                EXIT_USAGE) from None
        door = sitekeys.device_keys(data, device_id)
        sitekeys.write_secret(out, door, force)
        if device_id is not None and sitekeys.record_door_scope(data, device_id):
            sitekeys.write_secret(keys, data, force=True)  # the platform signs with its own keys
        typer.echo(f"wrote the door key file for site {data['site_id']} to {out} (generation "
                   f"{door['generation']}, accepts key version {' and '.join(map(str, door['accept']))})")

    _run(go)


@keys_app.command("per-door")
def keys_per_door(keys: Path = KEYS_OPT) -> None:
    """Move a site made before per-door keys to them: each door commissioned from now on gets
    its own command and whitelist keys (a key taken from one door then verifies at no other).
    Doors commissioned before keep working on the site-wide keys until commissioned again.

    Example: doorctl card keys per-door --keys site.json
    """
    from host_tools.cards import sitekeys

    def go() -> None:
        data, _ = sitekeys.load(keys, need_issuing=True)
        sitekeys.add_door_master(data)
        sitekeys.write_secret(keys, data, force=True)
        typer.echo(f"site {data['site_id']}: doors get their own keys from their next commissioning "
                   f"(doorctl commission --keys {keys}); restart the platform with this file; doors "
                   "not yet commissioned again keep the site-wide keys meanwhile")

    _run(go)


@keys_app.command("rotate")
def keys_rotate(
    keys: Path = KEYS_OPT,
    door_rekey: bool = typer.Option(None, "--door-rekey/--no-door-rekey",
                                    help="Let doors re-key cards at their next swipe (default: as is)."),
) -> None:
    """Make the next key version current; doors accept it and the previous one until `keys close`.

    Example: doorctl card keys rotate --keys site.json --door-rekey
    """
    from host_tools.cards import sitekeys

    def go() -> None:
        data, _ = sitekeys.load(keys, need_issuing=True)
        new = sitekeys.rotate(data, door_rekey)
        sitekeys.write_secret(keys, data, force=True)
        old = data["accept"][0]
        how = "at the desk (`doorctl card rekey`) or at the doors" if data["door_rekey"] else \
            "at the desk (`doorctl card rekey`)"
        typer.echo(f"site {data['site_id']}: key version {new} is current; doors accept versions {old} and "
                   f"{new} once they have key file generation {data['generation']} "
                   f"(`doorctl card keys door`); re-key cards {how}, then `doorctl card keys close`")

    _run(go)


@keys_app.command("revoke-door")
def keys_revoke_door(
    device_id: str = typer.Argument(..., help="The stolen or lost door's id (hz.b12.d3)."),
    keys: Path = KEYS_OPT,
) -> None:
    """Retire a stolen door's own keys: its id gets a new key epoch, so a replacement
    commissioned under it, and key updates sent to it, use keys the thief cannot compute.
    Then rotate the site's card keys (`doorctl card keys rotate`): see docs/threat-model.md.

    Example: doorctl card keys revoke-door hz.b12.d3 --keys site.json
    """
    from host_tools.cards import sitekeys
    from wire import common

    def go() -> None:
        try:
            common.check_device_id(device_id)
        except common.ProtocolError:
            raise UserError(f"{device_id!r} is not a device id (1-64 of A-Z a-z 0-9 - _ .)",
                            EXIT_USAGE) from None
        data, _ = sitekeys.load(keys, need_issuing=True)
        epoch = sitekeys.revoke_door(data, device_id)
        sitekeys.write_secret(keys, data, force=True)
        typer.echo(f"site {data['site_id']}: door {device_id}'s keys revoked "
                   f"(key epoch {epoch} from now on); "
                   f"restart the platform with {keys}, commission the replacement, then "
                   "`doorctl card keys rotate`")

    _run(go)


@keys_app.command("close")
def keys_close(keys: Path = KEYS_OPT,
               db: str = typer.Option(None, "--db", help="The platform's database: warn about each "
                                      "door that has not taken the rotation's key file.")) -> None:
    """End the rotation window: doors refuse cards still on the previous key version.
    A door that has not taken the rotation's key file (doorctl platform command ID keys) then
    refuses every re-keyed card: each such door is named on a warning line (with --db).

    Example: doorctl card keys close --keys site.json --db platform.db
    """
    from host_tools.cards import sitekeys

    def go() -> None:
        data, _ = sitekeys.load(keys, need_issuing=True)
        opened = int(data.get("generation", 1))  # the key file generation of the open window
        behind = doors_behind(db, data, opened) if db is not None else None
        retired = sitekeys.close(data)
        sitekeys.write_secret(keys, data, force=True)
        gone = ", ".join(map(str, retired))
        for door, gen in sorted((behind or {}).items()):
            held = gen if gen is not None else "unknown"
            typer.echo(f"warning: door {door} holds key file generation {held}, not {opened}: "
                       "it refuses re-keyed cards until it takes "
                       f"`doorctl platform command {door} keys --keys {keys}`", err=True)
        if behind is None and data.get("migrated"):
            typer.echo("warning: doors of this site not commissioned since it moved to per-door keys "
                       "hold the site-wide keys: each needs its key update (doorctl platform command ID "
                       "keys); pass --db to name the doors behind", err=True)
        typer.echo(f"site {data['site_id']}: key version {gone} retired; doors refuse "
                   f"it once they have key file generation {data['generation']} (`doorctl card keys door`); "
                   "the desk can still re-key such cards")

    _run(go)


def doors_behind(db: str, site: dict[str, Any], generation: int) -> dict[str, int | None]:
    """{door: its key file generation} of the site's doors (as the platform last heard)
    holding an older key file than `generation`."""
    from host_tools.cli_inputs import open_store
    from reference_platform.keyprogress import progress

    doors = progress(open_store(db), site)["doors"]
    return {d: g for d, g in doors.items() if g is None or g < generation}


@card_app.command("rekey")
def rekey(keys: Path = KEYS_OPT, reader: str = READER_OPT,
          db: str = typer.Option(None, "--db", help="Record the card's new key version in the "
                                 "platform's database (rotation progress: doorctl platform keys).")) -> None:
    """Move the card on the reader to the site's current key version (no reissue).

    Example: doorctl card rekey --keys site.json --reader "Virtual PCD 00 00"
    """
    from host_tools.cards import pcsc, sitekeys
    from host_tools.cards.rekey import rekey as do_rekey

    def go() -> None:
        _, store = sitekeys.load(keys, need_issuing=True)
        conn, transceive = pcsc.connect(reader)
        try:
            done = do_rekey(transceive, store)
        finally:
            pcsc.close(conn)
        before = sorted(set(done.before))
        if before == [done.after]:
            typer.echo(f"card {done.uid.hex()} already on key version {done.after}")
        else:
            typer.echo(f"card {done.uid.hex()} moved from key version {'/'.join(map(str, before))} "
                       f"to {done.after}")
        typer.echo(f"card reference: {done.ref.hex()}")
        if db is not None:
            from host_tools.cli_inputs import open_store
            from reference_platform.keyprogress import record_card

            record_card(open_store(db), done.ref.hex(), done.after)

    _run(go)


@card_app.command("personalize")
def personalize(
    keys: Path = KEYS_OPT,
    reader: str = READER_OPT,
    identity: str = typer.Option(None, "--identity", help="Card identity, 32 hex digits (default: random)."),
    as_json: bool = typer.Option(False, "--json", help="Print the UID, site and card reference as JSON."),
    wait: float = WAIT_OPT,
) -> None:
    """Make a blank DESFire EV2/EV3 card a door card of this site; prints its card reference.

    Example: doorctl card personalize --keys site.json --reader "Virtual PCD 00 00"
    """
    from host_tools.cards import pcsc, sitekeys
    from host_tools.cards.personalize import personalize as do_personalize

    def go() -> None:
        ident = None
        if identity is not None:
            try:
                ident = bytes.fromhex(identity)
            except ValueError:
                ident = b""
            if len(ident) != 16:
                raise UserError("--identity must be 32 hex digits", EXIT_USAGE)
        _, store = sitekeys.load(keys, need_issuing=True)
        conn, transceive = _connect(reader, wait)
        try:
            issued = do_personalize(transceive, store, ident)
        finally:
            pcsc.close(conn)
        if as_json:
            typer.echo(json.dumps({"uid": issued.uid.hex(), "site": store.site_id, "ref": issued.ref.hex()}))
            return
        typer.echo(f"personalized card {issued.uid.hex()} for site {store.site_id}")
        typer.echo(f"card reference: {issued.ref.hex()}")

    _run(go)


@card_app.command("read")
def read(
    keys: Path = KEYS_OPT,
    reader: str = READER_OPT,
    legacy_uid: bool = typer.Option(False, "--legacy-uid", help="Accept UID-only cards (low assurance)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    wait: float = WAIT_OPT,
) -> None:
    """Read a card as the door does and print its card reference or why it was refused
    (exit code 1).

    Example: doorctl card read --keys site.json --reader "Virtual PCD 00 00"
    """
    from card_reader.card_session import CardSession
    from host_tools.cards import pcsc, sitekeys

    def go() -> None:
        _, store = sitekeys.load(keys)
        conn, transceive = _connect(reader, wait)
        try:
            uid = _uid(transceive)
            sak = 0x20 if _is_iso_dep(conn) else 0x08
            result = CardSession(store, legacy_uid=legacy_uid).read(transceive, uid, sak)
        finally:
            pcsc.close(conn)
        if as_json:
            typer.echo(json.dumps({"ok": bool(result.ok), "reason": None if result.ok else result.reason,
                                   "ref": result.ref.hex() if result.ok else None,
                                   "profile": result.profile if result.ok else None,
                                   "low_assurance": bool(result.ok and result.low_assurance)}))
        if not result.ok:
            raise UserError(f"card refused: {result.reason}", EXIT_FAILED)
        if as_json:
            return
        low = " (low assurance)" if result.low_assurance else ""
        typer.echo(f"card reference: {result.ref.hex()} profile {result.profile}{low}")

    _run(go)


@card_app.command("virtual")
def virtual(
    state: Path = typer.Option(None, "--state", help="JSON file holding the card (kept personalized)."),
    kind: str = typer.Option("desfire", "--kind", help="desfire, clone (of --state's card) or uid."),
    slot: int = typer.Option(0, "--slot", help="vpcd slot: 0 (port 35963) or 1 (port 35964)."),
) -> None:
    """Put a virtual card on vsmartcard's vpcd until Ctrl-C.

    Example: doorctl card virtual --state card1.json
    """
    from host_tools.cards import vcard

    if slot not in (0, 1):
        raise fail("--slot must be 0 or 1", EXIT_USAGE)
    card: vcard.Card
    if kind == "desfire":
        card = vcard.VirtualDesfire(str(state) if state else None)
    elif kind == "clone":
        if state is None or not state.exists():
            raise fail("--kind clone needs --state of an existing card to copy", EXIT_USAGE)
        card = vcard.clone_of(vcard.VirtualDesfire(str(state)))
    elif kind == "uid":
        card = vcard.UidOnlyCard()
    else:
        raise fail(f"unknown card kind {kind!r}: desfire, clone or uid", EXIT_USAGE)
    deadline = time.monotonic() + 10  # pcscd may have just been started
    while True:
        try:
            client = vcard.VpcdClient(card, port=vcard.vpcd_port(slot)).start()
            break
        except OSError:
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
        raise fail(f"vpcd is not listening on port {vcard.vpcd_port(slot)}: start pcscd (pcscd -f) "
                   "with vsmartcard-vpcd installed", EXIT_NO_DEVICE) from None
    typer.echo(f"virtual {kind} card in vpcd slot {slot}; Ctrl-C removes it")
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    while not done.is_set() and not client.removed.is_set():
        done.wait(0.5)
    client.stop()


def _uid(transceive: Callable[[bytes], bytes]) -> bytes:
    """The UID through the PC/SC reader's pseudo-APDU (what the door gets from anticollision)."""
    resp = transceive(b"\xff\xca\x00\x00\x00")
    if len(resp) < 6 or resp[-2:] != b"\x90\x00":
        raise UserError("the reader did not give the card's UID: use a contactless PC/SC reader", EXIT_FAILED)
    return bytes(resp[:-2])


def _is_iso_dep(conn: object) -> bool:
    atr = bytes(conn.getATR())  # type: ignore[attr-defined]
    # PC/SC part 3: storage cards (MIFARE Classic, Ultralight) carry the RID A0 00 00 03 06
    return bytes.fromhex("A000000306") not in atr


def register(app: typer.Typer) -> None:
    app.add_typer(card_app, name="card")
