"""Mosquitto access control for protocol v1: the broker as a second line behind the MACs.

Identities (docs/broker-acl.md): every client logs in with a user name and password
(`allow_anonymous false`, `password_file`, made with `mosquitto_passwd`):

- a door's user name is its device id (`doorctl commission --broker-user ID
  --broker-password-file F`): it may publish only its own device-to-platform topics and read
  only its own platform-to-device topics;
- a platform instance (`platform run`, and the tools that send: `platform command`, `sync`)
  logs in as a user whose name starts with `@` (never a device id): it may read and publish
  every door's topics;
- an observer (`doorctl monitor`) logs in as a user whose name starts with `%`: it may read
  every door's topics and publish nothing.

The door rules are `pattern` lines with `%u` (the user name the broker authenticated), so a
new door needs only its password line; platform and observer users are listed by name.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wire import common

# What a door publishes (device -> platform) and what it reads (platform -> device).
DOOR_PUBLISHES = ("events", "presence", "status", "reply", "cache_state", "register")
DOOR_READS = ("ack", "cmd", "time", "cache", "resend")
PLATFORM_PREFIX = "@"
OBSERVER_PREFIX = "%"


def check_user(name: str, prefix: str) -> str:
    """A platform (`@...`) or observer (`%...`) user name: the prefix then 1-64 characters of
    a device id's alphabet (no `:` for the password file, no spaces for the ACL file)."""
    if not name.startswith(prefix):
        raise ValueError(f"{name!r} must start with {prefix!r}")
    try:
        common.check_device_id(name[1:])
    except common.ProtocolError:
        raise ValueError(f"{name!r}: after {prefix!r}, 1-64 of A-Z a-z 0-9 - _ .") from None
    return name


def acl_text(platform_users: Sequence[str], observer_users: Sequence[str] = ()) -> str:
    """The mosquitto `acl_file`."""
    root = common.ROOT  # door/v1/
    lines = ["# protocol v1 access control (reference_platform/broker_acl.py, docs/broker-acl.md)",
             "# Doors: their user name is their device id; only their own topics."]
    lines += [f"pattern write {root}%u/{leaf}" for leaf in DOOR_PUBLISHES]
    lines += [f"pattern read {root}%u/{leaf}" for leaf in DOOR_READS]
    for u in platform_users:
        check_user(u, PLATFORM_PREFIX)
        lines += ["", f"user {u}", f"topic readwrite {root}#"]
    for u in observer_users:
        check_user(u, OBSERVER_PREFIX)
        lines += ["", f"user {u}", f"topic read {root}#"]
    return "\n".join(lines) + "\n"


def conf_lines(password_file: Path, acl_file: Path) -> str:
    """The lines of mosquitto.conf that turn access control on (per listener settings off)."""
    return (f"allow_anonymous false\npassword_file {password_file}\nacl_file {acl_file}\n")


def password_line(user: str, password: str, iterations: int = 101) -> str:
    """A mosquitto password-file line: PBKDF2-SHA512 with a random salt (mosquitto 2's `$7$`
    format, what mosquitto_passwd writes), made here so the password never appears on a
    command line."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return (f"{user}:$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def set_password(password_file: Path, user: str, password: str) -> None:
    """Add or replace `user` in a mosquitto password file (written to a temporary name and
    renamed: the broker never reads half a file)."""
    lines = password_file.read_text().splitlines() if password_file.exists() else []
    lines = [ln for ln in lines if ln.split(":", 1)[0] != user] + [password_line(user, password)]
    tmp = password_file.with_name(password_file.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, password_file)


USER_ENV = "DOORCTL_BROKER_USER"
PASSWORD_FILE_ENV = "DOORCTL_BROKER_PASSWORD_FILE"


def env_login() -> tuple[str, str] | None:
    """(user, password) for the doorctl tools that talk to the broker, from the environment
    (DOORCTL_BROKER_USER and DOORCTL_BROKER_PASSWORD_FILE, a file holding the password: never
    on a command line); None when DOORCTL_BROKER_USER is not set."""
    from host_tools.errors import EXIT_USAGE, UserError

    user = os.environ.get(USER_ENV)
    if not user:
        return None
    path = os.environ.get(PASSWORD_FILE_ENV)
    if not path:
        raise UserError(f"{USER_ENV} is set: set {PASSWORD_FILE_ENV} to the file holding its "
                        "password", EXIT_USAGE)
    try:
        return user, Path(path).read_text().strip()
    except OSError as e:
        raise UserError(f"{PASSWORD_FILE_ENV} {path}: cannot be read ({e.strerror})", EXIT_USAGE) from None


def apply_env_login(client: Any) -> None:
    """Log a paho client in as the environment says (env_login), if it says anything."""
    login = env_login()
    if login is not None:
        client.username_pw_set(*login)
