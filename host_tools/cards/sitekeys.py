"""Site key files: the keys of one site's cards, created once and kept secret.

Format (JSON, file mode 0600):
  {"format": "doorctl-site-keys", "version": 1, "site_id": 1234, "system_id": "<hex>",
   "keys": {"app_master": "<hex16>", "door_read": "<hex16>", "card_ref": "<hex32>",
            "cache": "<hex32>", "command": "<hex32>"}}

`app_master` diversifies each card's application master key (issuing only: it never goes to
a door). `door_read` diversifies each card's door read key. `card_ref` keys the pseudonymous
card reference. `cache` signs the whitelist updates and `command` the remote commands (the
platform holds them too; docs/cache-format.md, docs/protocol.md). The door's key file is the
same without `app_master`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from crypto.keystore import KeyStoreError, SoftwareKeyStore
from host_tools.errors import EXIT_USAGE, UserError

FORMAT = "doorctl-site-keys"
DEVICE_FORMAT = "doorctl-door-keys"


def default_system_id(site_id: int) -> bytes:
    return b"DOOR" + site_id.to_bytes(4, "big")


def new_site_keys(site_id: int, system_id: bytes | None = None) -> dict[str, Any]:
    if not 0 <= site_id < 2**32:
        raise UserError("site id must be 0..4294967295", EXIT_USAGE)
    sysid = system_id if system_id is not None else default_system_id(site_id)
    if not 1 <= len(sysid) <= 21:
        raise UserError("system identifier must be 1..21 bytes (UID and AID take 10 of the 31)", EXIT_USAGE)
    return {
        "format": FORMAT, "version": 1, "site_id": site_id, "system_id": sysid.hex(),
        "keys": {"app_master": os.urandom(16).hex(), "door_read": os.urandom(16).hex(),
                 "card_ref": os.urandom(32).hex(), "cache": os.urandom(32).hex(),
                 "command": os.urandom(32).hex()},
    }


def device_keys(site: dict[str, Any]) -> dict[str, Any]:
    """What a door needs: no application master key, so a stolen door cannot issue or rewrite cards."""
    keys = {k: v for k, v in site["keys"].items() if k != "app_master"}
    return {"format": DEVICE_FORMAT, "version": 1, "site_id": site["site_id"],
            "system_id": site["system_id"], "keys": keys}


def write_secret(path: Path, data: dict[str, Any], force: bool = False) -> None:
    if path.exists() and not force:
        raise UserError(f"{path} already exists: choose another file or pass --force to replace it",
                        EXIT_USAGE)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"{path} cannot be written ({e.strerror or e})", EXIT_USAGE) from None


def load(path: Path, need_issuing: bool = False) -> tuple[dict[str, Any], SoftwareKeyStore]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"key file {path} not found: create one with `doorctl card keys init`",
                        EXIT_USAGE) from None
    except (OSError, ValueError):  # UnicodeDecodeError included: a binary file
        raise UserError(f"key file {path} is not a readable JSON key file", EXIT_USAGE) from None
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, DEVICE_FORMAT):
        raise UserError(f"{path} is not a doorctl key file", EXIT_USAGE)
    if need_issuing and "app_master" not in data.get("keys", {}):
        raise UserError(f"{path} is a door key file: personalizing needs the site key file", EXIT_USAGE)
    try:
        store = SoftwareKeyStore.from_dict(data)
    except KeyStoreError as e:
        raise UserError(f"{path}: {e}", EXIT_USAGE) from None
    return data, store
