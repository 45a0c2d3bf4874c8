"""`doorctl platform broker-acl`, `broker-user`: mosquitto access control for the doors and the
platform (docs/broker-acl.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from host_tools.errors import EXIT_USAGE, fail
from reference_platform import broker_acl
from wire import common


def acl(out: Path = typer.Option(..., "--out", help="Folder for `acl` and `access.conf`."),
        platform: list[str] = typer.Option(..., "--platform", help="A platform user, `@NAME` "
                                           "(repeatable): reads and publishes every door's topics."),
        observer: list[str] = typer.Option(None, "--observer", help="An observer user, `%NAME` "
                                           "(repeatable; doorctl monitor): reads every door's topics."),
        password_file: Path = typer.Option(Path("/etc/mosquitto/passwd"), "--passwd",
                                           help="Where the broker's password file will be.")) -> None:
    """Write mosquitto's access control: `acl` (each door publishes and reads only its own
    topics, only platform users publish ack, cmd, time, cache and resend) and `access.conf`
    (include it in mosquitto.conf). Doors log in with their device id as user name.

    Example: doorctl platform broker-acl --out /etc/mosquitto/door --platform @ingest --observer %monitor
    """
    try:
        text = broker_acl.acl_text(list(platform), list(observer or []))
    except ValueError as e:
        raise fail(f"--platform/--observer: {e}", EXIT_USAGE) from None
    if out.exists() and not out.is_dir():
        raise fail(f"--out {out}: not a folder", EXIT_USAGE)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "acl").write_text(text)
        (out / "access.conf").write_text(broker_acl.conf_lines(password_file, out.resolve() / "acl"))
    except OSError as e:
        raise fail(f"--out {out}: cannot be written ({e.strerror or e})", EXIT_USAGE) from None
    typer.echo(f"wrote {out / 'acl'} and {out / 'access.conf'}; add users with "
               "doorctl platform broker-user")


def user(passwd: Path = typer.Argument(..., help="The broker's password file (made if missing)."),
         name: str = typer.Argument(..., help="A door's device id, `@NAME` (platform) or `%NAME` "
                                    "(observer)."),
         password_file: Path = typer.Option(..., "--password-file",
                                            help="File holding the password (never printed).")) -> None:
    """Add or replace a user in mosquitto's password file (PBKDF2-SHA512, as mosquitto_passwd
    writes it; the password is read from a file, never from the command line). Send mosquitto
    SIGHUP to reload.

    Example: doorctl platform broker-user /etc/mosquitto/passwd hz.b12.d3 --password-file door.pw
    """
    try:
        if name[:1] == broker_acl.PLATFORM_PREFIX:
            broker_acl.check_user(name, broker_acl.PLATFORM_PREFIX)
        elif name[:1] == broker_acl.OBSERVER_PREFIX:
            broker_acl.check_user(name, broker_acl.OBSERVER_PREFIX)
        else:
            common.check_device_id(name)
    except (ValueError, common.ProtocolError):
        raise fail(f"{name!r} is not a device id, @NAME or %NAME (NAME: 1-64 of A-Z a-z 0-9 - _ .)",
                   EXIT_USAGE) from None
    try:
        password = password_file.read_text().strip()
    except OSError as e:
        raise fail(f"--password-file {password_file}: cannot be read ({e.strerror})", EXIT_USAGE) from None
    if not password:
        raise fail(f"--password-file {password_file}: empty", EXIT_USAGE)
    try:
        broker_acl.set_password(passwd, name, password)
    except OSError as e:
        raise fail(f"{passwd}: cannot be written ({e.strerror})", EXIT_USAGE) from None
    typer.echo(f"{name} set in {passwd}")


def register(app: typer.Typer) -> None:
    app.command("broker-acl")(acl)
    app.command("broker-user")(user)
