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

Key versions (docs/card-profile.md, "Key versions and rotation"): `app_master` and
`door_read` are version 1; a rotation adds `app_master.N` and `door_read.N`. Fields:
`key_version` (the current version: new cards and re-keys get it), `accept` (the door read
versions doors accept: two during a rotation window, one otherwise), `door_rekey` (doors move
cards to the current version on their next swipe), `generation` (bumped by every rotation
step; a door reports the generation of the key file it holds). The site file keeps every
version (the desk can still re-key a card that missed the window); the door file holds only
the accepted door read versions.

Per-door keys (docs/threat-model.md, "Stolen or opened controller"): a site file with a
`door_master` secret (every file `doorctl card keys init` makes) gives each door its own
`command` key (remote commands, trusted time, acknowledgements) and `cache` key (whitelist
files and pieces), derived from `door_master` with the door's device id, so a key taken
from one door verifies at no other. `door_master` never reaches a door; the platform derives
the same keys to sign for each door. The door file then says `"scope": "door"` and names its
`device`. A site file without `door_master` (made before per-door keys) keeps giving every
door the site-wide `command` and `cache` keys. One moved to per-door keys (`add_door_master`)
says `migrated` and lists in `door_scoped` the doors given their own keys since; the others
hold the site-wide ones (`door_scope`: the platform signs by this record, never by a door's
registration).

Door key epochs (docs/threat-model.md, "After a theft"): `door_epochs` ({device: epoch},
absent = 1) is mixed into a door's own keys and its key update key; `doorctl card keys
revoke-door ID` lists the stolen epoch under `revoked` ({device: [epochs]}) and bumps the
door's epoch, so a replacement under the same id (or a key update sent to that id) gets keys
the thief cannot compute. No key file is made or sealed for a revoked epoch.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from crypto import keyupdate
from crypto.hmac256 import hmac_sha256
from crypto.keystore import KeyStoreError, SoftwareKeyStore
from host_tools.errors import EXIT_USAGE, UserError

FORMAT = "doorctl-site-keys"
DEVICE_FORMAT = "doorctl-door-keys"


def default_system_id(site_id: int) -> bytes:
    return b"DOOR" + site_id.to_bytes(4, "big")


# The derivation of a door's own keys (HMAC-SHA256 as a one-block HKDF-Expand, the site's
# `door_master` as PRK): purpose and device id are the diversification input; the version is
# the door key version (1 until a rotation re-derives them). Device ids hold no "|".
DOOR_KDF_LABEL = b"doorctl-door-key/v1|"
DOOR_PURPOSES = ("command", "cache")


def new_site_keys(site_id: int, system_id: bytes | None = None, door_rekey: bool = False,
                  per_door: bool = True) -> dict[str, Any]:
    if not 0 <= site_id < 2**32:
        raise UserError("site id must be 0..4294967295", EXIT_USAGE)
    sysid = system_id if system_id is not None else default_system_id(site_id)
    if not 1 <= len(sysid) <= 21:
        raise UserError("system identifier must be 1..21 bytes (UID and AID take 10 of the 31)", EXIT_USAGE)
    data: dict[str, Any] = {
        "format": FORMAT, "version": 1, "site_id": site_id, "system_id": sysid.hex(),
        "keys": {"app_master": os.urandom(16).hex(), "door_read": os.urandom(16).hex(),
                 "card_ref": os.urandom(32).hex(), "cache": os.urandom(32).hex(),
                 "command": os.urandom(32).hex(), "provision": os.urandom(32).hex()},
        "key_version": 1, "accept": [1], "door_rekey": door_rekey, "generation": 1,
    }
    if per_door:
        data["keys"]["door_master"] = os.urandom(32).hex()
    return data


def slot_name(kind: str, version: int) -> str:
    return kind if version == 1 else f"{kind}.{version}"


def versions(site: dict[str, Any]) -> list[int]:
    """Every door read key version the file holds."""
    out = []
    for slot in site["keys"]:
        if slot == "door_read":
            out.append(1)
        elif slot.startswith("door_read."):
            out.append(int(slot.split(".")[1]))
    return sorted(out)


def rotate(site: dict[str, Any], door_rekey: bool | None = None) -> int:
    """Open a rotation window: a new key version becomes current; doors accept it and the
    previous one until `close`. Returns the new version."""
    accept = site.get("accept", [site.get("key_version", 1)])
    if len(accept) > 1:
        raise UserError(f"a rotation is already open (doors accept versions {accept[0]} and {accept[1]}): "
                        "close it first with `doorctl card keys close`", EXIT_USAGE)
    new = max(versions(site)) + 1
    site["keys"].setdefault("provision", os.urandom(32).hex())
    site["keys"][slot_name("app_master", new)] = os.urandom(16).hex()
    site["keys"][slot_name("door_read", new)] = os.urandom(16).hex()
    site["accept"] = [site.get("key_version", 1), new]
    site["key_version"] = new
    if door_rekey is not None:
        site["door_rekey"] = door_rekey
    site["generation"] = site.get("generation", 1) + 1
    site["rotated_at"] = int(time.time())  # the platform's progress counts door re-keys since
    return new


def close(site: dict[str, Any]) -> list[int]:
    """End the rotation window: doors accept the current version only. Returns the versions
    no longer accepted."""
    accept = site.get("accept", [site.get("key_version", 1)])
    current = site.get("key_version", 1)
    if accept == [current]:
        raise UserError(f"no rotation is open: doors accept version {current} only", EXIT_USAGE)
    site["accept"] = [current]
    site["generation"] = site.get("generation", 1) + 1
    return [v for v in accept if v != current]


def door_epoch(site: dict[str, Any], device_id: str) -> int:
    """The key epoch of door `device_id` (1 until `revoke-door` retires one)."""
    return int(site.get("door_epochs", {}).get(device_id, 1))


def revoked(site: dict[str, Any]) -> dict[str, list[int]]:
    """{device: the key epochs retired for it} (a stolen door's keys)."""
    return {d: list(map(int, e)) for d, e in site.get("revoked", {}).items()}


def check_not_revoked(site: dict[str, Any], device_id: str) -> None:
    """Refuse to make keys for a door whose current epoch was retired."""
    if door_epoch(site, device_id) in revoked(site).get(device_id, []):
        raise UserError(f"door {device_id}'s keys were revoked (stolen door): its epoch was not moved on; "
                        f"run `doorctl card keys revoke-door {device_id}` with the current site key file",
                        EXIT_USAGE)


def revoke_door(site: dict[str, Any], device_id: str) -> int:
    """Retire door `device_id`'s keys (after a theft): its epoch is listed as revoked and the
    next one becomes current, so what the thief holds opens nothing sent to that id again.
    Returns the new epoch."""
    if site.get("format") != FORMAT or not any(k.startswith("app_master") for k in site["keys"]):
        raise UserError("revoking a door needs the site key file, not a door key file", EXIT_USAGE)
    old = door_epoch(site, device_id)
    gone = site.setdefault("revoked", {}).setdefault(device_id, [])
    if old not in gone:
        gone.append(old)
    new = max([old, *gone]) + 1
    site.setdefault("door_epochs", {})[device_id] = new
    return new


def door_update_key(site: dict[str, Any], device_id: str) -> bytes:
    """The door's own key for sealed key updates (crypto/keyupdate.py): derived from the site's
    `provision` secret, which no door holds (added to older site files on first use), and the
    door's key epoch (epoch 1 keeps the original derivation)."""
    prov = site["keys"].get("provision")
    if prov is None:
        raise UserError("the site key file has no provision secret (made before key updates existed): "
                        "`doorctl card keys rotate` adds one", EXIT_USAGE)
    epoch = door_epoch(site, device_id)
    suffix = b"" if epoch == 1 else b"|" + epoch.to_bytes(4, "big")
    return hmac_sha256(bytes.fromhex(prov), b"U" + device_id.encode() + suffix)


def sealed_update(site: dict[str, Any], device_id: str, iv: bytes | None = None) -> dict[str, Any]:
    """The `keys` command arguments: this door's key file of the site's current generation,
    sealed for `device_id` (never in clear on the broker); a door the site file records as
    still on the site-wide keys gets a site-wide key file (an update never moves a door
    between the two: `key_scope`)."""
    check_not_revoked(site, device_id)
    key = door_update_key(site, device_id)
    site_wide = door_scope(site, device_id) == "site"
    plain = json.dumps(device_keys(site, device_id, site_wide)).encode()
    return keyupdate.seal(lambda m: hmac_sha256(key, m), device_id, int(site.get("generation", 1)), plain,
                          iv or os.urandom(16))


def door_scope(site: dict[str, Any], device_id: str) -> str:
    """Which keys door `device_id` holds, as the site file records it ("door": its own;
    "site": the site-wide ones). A site moved by `add_door_master` (`migrated`) lists in
    `door_scoped` the doors given their own keys since; every other door of it still holds the
    site-wide keys. Decided here, never by what a door (or anyone on the broker) claims."""
    if not per_door(site):
        return "site"
    if site.get("migrated") and device_id not in site.get("door_scoped", []):
        return "site"
    return "door"


def record_door_scope(site: dict[str, Any], device_id: str) -> bool:
    """Door `device_id` was just given its own keys: record it on a migrated site. True when
    the site file changed (the caller writes it)."""
    if door_scope(site, device_id) == "door":
        return False
    if not per_door(site):
        return False
    site.setdefault("door_scoped", []).append(device_id)
    return True


def add_door_master(site: dict[str, Any]) -> None:
    """Move an older site to per-door keys: a `door_master` no door holds. Doors commissioned
    from then on get their own command and cache keys; the others keep the site-wide ones
    until they are commissioned again (the platform signs for each as it registers)."""
    if per_door(site):
        raise UserError("this site already gives each door its own keys", EXIT_USAGE)
    if site.get("format") != FORMAT or not any(k.startswith("app_master") for k in site["keys"]):
        raise UserError("a door key file cannot be moved to per-door keys: use the site key file", EXIT_USAGE)
    site["keys"]["door_master"] = os.urandom(32).hex()
    site["migrated"] = int(site.get("generation", 1))  # doors listed in door_scoped hold their own
    site.setdefault("door_scoped", [])


def per_door(site: dict[str, Any]) -> bool:
    """Whether this site gives each door its own command and cache keys (`door_master`)."""
    return "door_master" in site["keys"]


def door_key(site: dict[str, Any], purpose: str, device_id: str, version: int | None = None) -> bytes:
    """Door `device_id`'s own key for `purpose` ("command": commands, trusted time and
    acknowledgements; "cache": whitelist files and pieces), from the site's `door_master` and
    the door's key epoch (`version`, default the door's current one)."""
    if purpose not in DOOR_PURPOSES:
        raise ValueError(f"no door key for {purpose!r}")
    if not device_id or "|" in device_id:
        raise ValueError("a door key needs the door's device id")
    if version is None:
        version = door_epoch(site, device_id)
    master = bytes.fromhex(site["keys"]["door_master"])
    # the standard library's HMAC-SHA256 (crypto.hmac256's bytes, a tenth of its time: a
    # platform derives a key for each of a city's doors)
    return hmac.digest(master, DOOR_KDF_LABEL + purpose.encode() + b"|" + device_id.encode()
                       + b"|" + int(version).to_bytes(4, "big"), "sha256")


def signing_key(site: dict[str, Any], purpose: str, device_id: str, site_wide: bool | None = None) -> bytes:
    """The key that signs what goes to door `device_id`: its own on a per-door site, the
    site-wide one on an older site or for a door the site file records as still holding the
    site-wide keys (`door_scope`; `site_wide` overrides it, for a key file being written)."""
    if site_wide is None:
        site_wide = door_scope(site, device_id) == "site"
    if per_door(site) and not site_wide:
        return door_key(site, purpose, device_id)
    try:
        return bytes.fromhex(site["keys"][purpose])
    except (KeyError, ValueError):
        raise ValueError(f"the site key file has no {purpose} key") from None


def device_keys(site: dict[str, Any], device_id: str | None = None,
                site_wide: bool = False) -> dict[str, Any]:
    """What a door needs: no application master key, so a stolen door cannot issue or rewrite
    cards; on a per-door site its own command and cache keys, never the site's (`site_wide`:
    the key file of a door that still holds the site-wide ones, for its key updates)."""
    if device_id is not None:
        check_not_revoked(site, device_id)
    current = site.get("key_version", 1)
    accept = site.get("accept", [current])
    read = {slot_name("door_read", v) for v in accept}
    keys = {k: v for k, v in site["keys"].items() if k not in ("provision", "door_master")
            and not k.startswith("app_master") and (not k.startswith("door_read") or k in read)}
    out: dict[str, Any] = {"format": DEVICE_FORMAT, "version": 1}
    if per_door(site) and not site_wide:
        if device_id is None:
            raise UserError("this site gives each door its own keys: name the door (--device-id)",
                            EXIT_USAGE)
        for purpose in DOOR_PURPOSES:
            keys[purpose] = door_key(site, purpose, device_id).hex()
        out.update(scope="door", device=device_id)
    if device_id is not None and "provision" in site["keys"]:
        keys["update"] = door_update_key(site, device_id).hex()
    out.update({"site_id": site["site_id"], "system_id": site["system_id"], "keys": keys,
                "key_version": current, "accept": list(accept),
                "door_rekey": bool(site.get("door_rekey", False)), "generation": site.get("generation", 1)})
    return out


def write_secret(path: Path, data: dict[str, Any], force: bool = False) -> None:
    if path.exists() and not force:
        raise UserError(f"{path} already exists: choose another file or pass --force to replace it",
                        EXIT_USAGE)
    # A new temporary file of our own (never one left behind or planted as a symlink: its
    # mode or its target would carry the keys), owner-only, renamed over the key file.
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise UserError(f"{path} cannot be written ({e.strerror or e})", EXIT_USAGE) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def load(path: Path, need_issuing: bool = False,
         for_doors: bool = False) -> tuple[dict[str, Any], SoftwareKeyStore]:
    """The key file's content and its key store. `for_doors`: the caller signs or writes key
    files for any door of the site (the platform, commissioning), which one door's per-door
    key file cannot do."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"key file {path} not found: create one with `doorctl card keys init`",
                        EXIT_USAGE) from None
    except (OSError, ValueError):  # UnicodeDecodeError included: a binary file
        raise UserError(f"key file {path} is not a readable JSON key file", EXIT_USAGE) from None
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, DEVICE_FORMAT):
        raise UserError(f"{path} is not a doorctl key file", EXIT_USAGE)
    if for_doors and data.get("scope") == "door":
        raise UserError(f"{path} is door {data.get('device')}'s own key file: signing for the site's "
                        "doors needs the site key file (doorctl card keys init)", EXIT_USAGE)
    if need_issuing and not any(k.startswith("app_master") for k in data.get("keys", {})):
        raise UserError(f"{path} is a door key file: personalizing needs the site key file", EXIT_USAGE)
    try:
        store = SoftwareKeyStore.from_dict(data)
    except KeyStoreError as e:
        raise UserError(f"{path}: {e}", EXIT_USAGE) from None
    return data, store
