"""Signed remote commands from the platform to a door (docs/protocol.md, "Commands").

The door checks them offline with its `command` key: tag, validity window, issued after its
boot, single use. The platform signs with the same site key (the site key file's `command`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from crypto.hmac256 import hmac_sha256
from wire import common
from wire.platform import command_signing_bytes, encode_command


def command_key(site_keys: dict[str, Any]) -> bytes:
    """The `command` key of a site key file (doorctl card keys init)."""
    try:
        return bytes.fromhex(site_keys["keys"]["command"])
    except (KeyError, ValueError):
        raise ValueError("the site key file has no command key") from None


def sign(key: bytes, device: str, op: str, args: dict[str, Any] | None = None,
         now: float | None = None, cmd_id: str | None = None) -> tuple[str, bytes]:
    """(command id, payload) of a command valid from now for protocol.COMMAND_TTL seconds."""
    args = dict(args or {})
    cmd_id = cmd_id or "c-" + uuid.uuid4().hex[:16]
    exp = int(now if now is not None else time.time()) + common.COMMAND_TTL
    mac = ""
    if op in common.SIGNED_COMMANDS:
        mac = hmac_sha256(key, command_signing_bytes(device, cmd_id, op, args, exp)).hex()
    return cmd_id, encode_command(cmd_id, op, args, exp, mac)
