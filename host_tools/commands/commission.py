"""`doorctl commission`: give a door its identity, its platform, its keys and its whitelist."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from host_tools.cards import sitekeys
from host_tools.cli_inputs import parse_broker
from host_tools.console import check_port, handshake
from host_tools.door_stage import Transaction
from host_tools.errors import EXIT_INTERRUPTED, EXIT_USAGE, UserError, fail
from host_tools.ports import pick_port
from offline_cache import fmt
from reference_platform.door_signing import retag
from wire import common


def _bad(value: str, why: str) -> UserError:
    return UserError(f"{value}: {why}", EXIT_USAGE)


def _broker(value: str, tls: bool) -> tuple[str, int]:
    """HOST:PORT, mqtt://HOST:PORT or mqtts://HOST:PORT; mqtts:// wants --tls-ca, mqtt:// none."""
    b = parse_broker(value)
    if b.tls is True and not tls:
        raise _bad(f"--broker {value!r}", "mqtts:// (TLS) needs --tls-ca, the CA of the broker's certificate")
    if b.tls is False and tls:
        raise _bad(f"--broker {value!r}", "mqtt:// is plain MQTT but --tls-ca was given: use mqtts://")
    return b.host, b.port


def _secret(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        text = path.read_text().strip()
    except OSError:
        raise _bad(f"{what} {path}", "cannot be read") from None
    if not text:
        raise _bad(f"{what} {path}", "is empty")
    return text


def _pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError:
        raise _bad(f"{what} {path}", "cannot be read") from None
    if b"-----BEGIN" not in data:
        raise _bad(f"{what} {path}", "not a PEM file (-----BEGIN ...)")
    return data


def check_tls(ca: Path | None, cert: Path | None, key: Path | None) -> dict[str, bytes]:
    """The door's TLS files, checked and rewritten as plain PEM: {"ca.pem": ...} and, for a
    client certificate, "client.crt" and "client.key". UserError names the bad option (the
    key's content never appears in a message)."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    if (cert is None) != (key is None):
        raise _bad("--tls-cert/--tls-key", "give both or neither")
    if ca is None:
        if cert is not None:
            raise _bad(f"--tls-cert {cert}", "needs --tls-ca (the CA that signed the broker's certificate)")
        return {}
    pem = serialization.Encoding.PEM
    try:
        cas = x509.load_pem_x509_certificates(_pem(ca, "--tls-ca"))
    except ValueError:
        raise _bad(f"--tls-ca {ca}", "not a PEM certificate") from None
    out = {"ca.pem": b"".join(c.public_bytes(pem) for c in cas)}
    if cert is None or key is None:
        return out
    try:
        crt = x509.load_pem_x509_certificate(_pem(cert, "--tls-cert"))
    except ValueError:
        raise _bad(f"--tls-cert {cert}", "not a PEM certificate") from None
    try:
        pkey = serialization.load_pem_private_key(_pem(key, "--tls-key"), password=None)
    except TypeError:
        raise _bad(f"--tls-key {key}", "is encrypted: the door needs an unencrypted key "
                   "(openssl pkey -in KEY -out door.key)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise _bad(f"--tls-key {key}", "not a PEM private key") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if pkey.public_key().public_bytes(pem, spki) != crt.public_key().public_bytes(pem, spki):
        raise _bad(f"--tls-key {key}", f"does not belong to the certificate --tls-cert {cert}")
    out["client.crt"] = crt.public_bytes(pem)
    out["client.key"] = pkey.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
    return out


def build_config(device_id: str, site_id: int, door_no: int, broker: str, user: str | None,
                 password: str | None, tls: bool, wifi_ssid: str | None, wifi_password: str | None,
                 fail_safe: bool, door_timings: dict[str, int], legacy_uid: bool,
                 legacy_classic: bool, client_cert: bool = False) -> dict[str, Any]:
    """The door's config.json, every value checked first (UserError names the wrong one)."""
    try:
        common.check_device_id(device_id)
    except common.ProtocolError:
        raise _bad(f"--device-id {device_id!r}", "use 1-64 of A-Z a-z 0-9 - _ . "
                   "(e.g. site.building.door: hz.b12.d3)") from None
    if not 0 <= door_no <= 15:
        raise _bad(f"--door-no {door_no}", "must be 0-15 (the door's bit in the whitelist)")
    host, port = _broker(broker, tls)
    for key, value in door_timings.items():
        lo, hi = common.config_limits(key)
        if not lo <= value <= hi:
            raise _bad(f"--{key.replace('_', '-')} {value}", f"must be {lo}-{hi}")
    if (wifi_ssid is None) != (wifi_password is None):
        raise _bad("--wifi-ssid/--wifi-password-file", "give both or neither")
    b: dict[str, Any] = {"host": host, "port": port, "ssl": tls, "keepalive": 30}
    if user is not None:
        b["user"] = user
        b["password"] = password or ""
    if tls:
        b["ca"] = "ca.pem"
        if client_cert:
            b["cert"], b["key"] = "client.crt", "client.key"
    cfg: dict[str, Any] = {"device_id": device_id, "site_id": site_id, "door_no": door_no,
                           "commissioned_at": int(time.time()), "broker": b,
                           "door": dict(door_timings, fail_safe=fail_safe),
                           "cards": {"legacy_uid": legacy_uid, "legacy_classic": legacy_classic}}
    if wifi_ssid is not None:
        cfg["wifi"] = {"ssid": wifi_ssid, "password": wifi_password}
    return cfg


def check_cache(path: Path, site: dict[str, Any]) -> bytes:
    """A signed snapshot for this site, verified here before it goes to the door."""
    try:
        data = path.read_bytes()
        hdr = fmt.parse_header(data, len(data))
    except OSError:
        raise _bad(f"--cache {path}", "cannot be read") from None
    except fmt.CacheError as e:
        raise _bad(f"--cache {path}", f"not a whitelist file ({e.reason})") from None
    key = bytes.fromhex(site["keys"]["cache"])
    if not fmt.tags_equal(fmt.hmac_sha256(key, data[:-fmt.TAG_SIZE]), data[-fmt.TAG_SIZE:]):
        raise _bad(f"--cache {path}", "not signed with this site's cache key")
    if hdr.site != site["site_id"]:
        raise _bad(f"--cache {path}", f"built for site {hdr.site}, not {site['site_id']}")
    if hdr.kind != fmt.KIND_SNAPSHOT:
        raise _bad(f"--cache {path}", "a delta: commission with a snapshot (doorctl cache build)")
    return data


def platform_whitelist(db: str, site: dict[str, Any]) -> bytes:
    """The platform's current whitelist as a snapshot signed with this site's cache key: the
    platform stays the one authority on whitelist versions (docs/installer-guide.md)."""
    from host_tools.cli_inputs import open_store
    from reference_platform.cards import CardRegistry

    registry = CardRegistry(open_store(db, "--whitelist-from"), site)
    if registry.version() < 1:
        raise _bad(f"--whitelist-from {db}", "the platform has no whitelist yet: issue the "
                   "cards there first (doorctl platform card issue)")
    return registry.snapshot()


def door_files(site: dict[str, Any], cfg: dict[str, Any], tls_files: dict[str, bytes],
               snapshot: bytes | None, door_keys: dict[str, Any] | None = None
               ) -> tuple[dict[str, bytes], list[str]]:
    """What a commissioning puts on the door (path -> content) and what it removes.
    `door_keys`: the door's key file (default: the site's, without a door update key). On a
    per-door site the snapshot is signed again with the door's own cache key (the only one it
    holds)."""
    device = cfg["device_id"]
    per_door = sitekeys.per_door(site)
    files = dict(tls_files)
    if snapshot is not None:
        if per_door:
            snapshot = retag(snapshot, sitekeys.door_key(site, "cache", device))
        files = {"cache/main.bin": snapshot, **files}  # the big one first: its bar shows
    if door_keys is None:
        door_keys = sitekeys.device_keys(site, device if per_door else None)
    files["keys.json"] = json.dumps(door_keys).encode()
    files["config.json"] = json.dumps(cfg).encode()
    # No client certificate in this commissioning: none stays on the door. A new whitelist
    # starts afresh: no pending changes on the old one, no version floor, so the platform's
    # versions go on from this one's (offline_cache/cache.py).
    remove = [] if "client.key" in tls_files else ["client.crt", "client.key"]
    if snapshot is not None:
        remove += ["cache/overlay.bin", "cache/floor"]
    return files, remove


def _transact(port: str, files: dict[str, bytes], remove: list[str]) -> None:
    """Stage every file on the door with a progress bar, verify, and commit in one step
    (host_tools/door_stage.py): a cut or Ctrl-C anywhere leaves the old door or the new one."""
    total = sum(len(d) for d in files.values())
    with Progress(TextColumn("writing to the door"), BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=total)
        tx = Transaction(port, files, remove,
                         progress=lambda done, _total: bar.update(task, completed=done))
        tx.run()


def commission(
    port: str = typer.Option(None, "--port", "-p", help="The door's serial port (or a virtual "
                             "door's pty; default: the one USB serial port found)."),
    keys: Path = typer.Option(..., "--keys", help="Site key file (doorctl card keys init); the "
                              "door gets its key file from it (no issuing key), never printed."),
    device_id: str = typer.Option(..., "--device-id",
                                  help="The door's id: site.building.door, e.g. hz.b12.d3."),
    door_no: int = typer.Option(..., "--door-no",
                                help="The door's number 0-15 in the whitelist's door groups."),
    broker: str = typer.Option(..., "--broker", help="Platform broker HOST:PORT (or "
                               "mqtt://HOST:PORT, mqtts://HOST:PORT with --tls-ca)."),
    broker_user: str = typer.Option(None, "--broker-user", help="Broker user name."),
    broker_password_file: Path = typer.Option(None, "--broker-password-file",
                                              help="File holding the broker password."),
    tls_ca: Path = typer.Option(None, "--tls-ca", help="CA certificate (PEM) that signed the "
                                "broker's certificate: the door connects with TLS and checks it."),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="The door's client certificate (PEM), "
                                  "for a broker that requires one; with --tls-key."),
    tls_key: Path = typer.Option(None, "--tls-key", help="The client certificate's private key "
                                 "(PEM, unencrypted); never printed."),
    wifi_ssid: str = typer.Option(None, "--wifi-ssid", help="Wi-Fi network (ESP32)."),
    wifi_password_file: Path = typer.Option(None, "--wifi-password-file",
                                            help="File holding the Wi-Fi password."),
    lock: str = typer.Option("fail-secure", "--lock", help="fail-secure (energise to unlock) or "
                             "fail-safe (energise to lock: opens on power loss)."),
    unlock_ms: int = typer.Option(5000, "--unlock-ms", help="Unlock window after a grant, ms."),
    held_open_ms: int = typer.Option(30000, "--held-open-ms",
                                     help="Door open this long: held-open alarm, ms."),
    legacy_uid: bool = typer.Option(False, "--legacy-uid",
                                    help="Also accept UID-only cards (low assurance)."),
    legacy_classic: bool = typer.Option(False, "--legacy-classic",
                                        help="Also accept MIFARE Classic cards (low assurance)."),
    cache: Path = typer.Option(None, "--cache", help="Signed whitelist snapshot (doorctl cache build)."),
    whitelist_from: str = typer.Option(None, "--whitelist-from", help="The platform's database "
                                       "(as for platform run): the door gets the platform's "
                                       "current whitelist, so its version is the platform's "
                                       "(instead of --cache)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON (no secrets)."),
) -> None:
    """Commission a door: identity, platform broker (TLS), Wi-Fi, lock type and timings, card
    profiles, keys and whitelist, each value checked before anything is written. Everything
    is staged on the door's flash (a whitelist of any size streamed with a progress bar),
    verified, then switched in one step: a power cut or Ctrl-C at any point leaves the old door
    or the new one, and running the command again resumes where it stopped.

    Restart the door afterwards (power cycle) to apply: it switches over as it boots. It then
    registers itself at the platform on every connection: a retained `register` message with
    its site, door number, firmware, lock type, card profiles and TLS use (no keys), shown by
    `doorctl platform doors`.

    Examples:
      doorctl commission -p /dev/ttyUSB0 --keys site.json --device-id hz.b12.d3 --door-no 3 \\
        --broker 10.0.0.5:8883 --tls-ca ca.pem --broker-user hz.b12.d3 \\
        --broker-password-file pw.txt --wifi-ssid door-net --wifi-password-file wifi.txt \\
        --cache whitelist.bin
      doorctl commission ... --tls-ca ca.pem --tls-cert hz.b12.d3.crt --tls-key hz.b12.d3.key
    """
    try:
        if lock not in ("fail-secure", "fail-safe"):
            raise _bad(f"--lock {lock!r}", "must be fail-secure or fail-safe")
        site, _ = sitekeys.load(keys, for_doors=True)
        for slot in ("cache", "command"):
            if slot not in site["keys"]:
                raise _bad(f"--keys {keys}", f"has no {slot} key: make a new site key file "
                           "with `doorctl card keys init`")
        tls_files = check_tls(tls_ca, tls_cert, tls_key)
        cfg = build_config(device_id, int(site["site_id"]), door_no, broker, broker_user,
                           _secret(broker_password_file, "--broker-password-file"), tls_ca is not None,
                           wifi_ssid, _secret(wifi_password_file, "--wifi-password-file"),
                           lock == "fail-safe", {"unlock_ms": unlock_ms, "held_open_ms": held_open_ms},
                           legacy_uid, legacy_classic, "client.key" in tls_files)
        if cache is not None and whitelist_from is not None:
            raise _bad("--cache/--whitelist-from", "give one: the whitelist comes from a file "
                       "or from the platform")
        snapshot = check_cache(cache, site) if cache is not None else None
        if whitelist_from is not None:
            snapshot = platform_whitelist(whitelist_from, site)
        # the door's own update key only when the site can seal key updates (crypto/keyupdate.py)
        # per-door site: the door's own command and cache keys (host_tools/cards/sitekeys.py)
        door_keys = sitekeys.device_keys(site, device_id)
        port = pick_port(port)
        check_port(port)
        handshake(port)
        files, remove = door_files(site, cfg, tls_files, snapshot, door_keys)
        _transact(port, files, remove)
        if sitekeys.record_door_scope(site, device_id):
            # a site moved to per-door keys: the platform signs for this door with its own
            # keys from now on (sitekeys.door_scope), never on what the door claims
            sitekeys.write_secret(keys, site, force=True)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    except KeyboardInterrupt:
        raise fail("interrupted: the door is unchanged until a commissioning is complete; run "
                   "the same command again (it resumes where it stopped)", EXIT_INTERRUPTED) from None
    shown = json.loads(json.dumps(cfg))
    if "password" in shown["broker"]:
        shown["broker"]["password"] = "(set)"
    if "wifi" in shown:
        shown["wifi"]["password"] = "(set)"
    if as_json:
        typer.echo(json.dumps({"config": shown, "keys": sorted(door_keys["keys"]),
                               "cache": len(snapshot) if snapshot is not None else None}))
    else:
        typer.echo(f"commissioned {device_id} (site {site['site_id']}, door {door_no}) on {port}: "
                   f"config.json, keys.json" + "".join(f", {n}" for n in tls_files)
                   + (f", whitelist ({len(snapshot)} bytes)" if snapshot is not None else "")
                   + "; restart the door to apply: it registers at the platform when it connects")


def register(app: typer.Typer) -> None:
    app.command("commission")(commission)
