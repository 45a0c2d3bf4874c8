"""Which key signs what the platform sends one door (docs/threat-model.md, "Stolen or opened
controller").

On a per-door site (its key file has `door_master`) every door holds its own `command` and
`cache` keys, so the platform signs each door's commands, times, acknowledgements, whitelist
files and pieces with that door's keys: what a thief takes from one door verifies at no
other. A door that registers with `"keys": "site"` (commissioned before its site moved to
per-door keys) is signed for with the site-wide keys until it is commissioned again. An older
site file (no `door_master`) signs every door with its site-wide keys, as before.
"""

from __future__ import annotations

from typing import Any

from crypto.hmac256 import hmac_sha256
from host_tools.cards import sitekeys
from offline_cache import fmt


def retag(data: bytes, key: bytes) -> bytes:
    """A signed whitelist file (snapshot or delta) with its tag made again under `key`: the
    same content, signed for the door that holds `key`."""
    body = bytes(data[:-fmt.TAG_SIZE])
    return body + hmac_sha256(key, body)


class DoorSigner:
    """The signing keys per door, from the site key file's content; no key leaves it except
    to the caller that signs."""

    def __init__(self, site: dict[str, Any]) -> None:
        self.site = site
        self.per_door = sitekeys.per_door(site)
        self._claims: dict[str, str] = {}  # device -> "door" | "site", from its registration
        self._cache: dict[tuple[str, str, bool], bytes] = {}

    def __repr__(self) -> str:
        return f"<DoorSigner site={self.site.get('site_id')} per_door={self.per_door} keys hidden>"

    def registered(self, device: str, keys: str) -> bool:
        """The door says which keys it holds; True when that changes how it is signed for."""
        before = self._site_wide(device)
        self._claims[device] = keys
        return before != self._site_wide(device)

    def _site_wide(self, device: str) -> bool:
        return self._claims.get(device) == "site"

    def key(self, purpose: str, device: str) -> bytes:
        """Door `device`'s key for `purpose` ("command" or "cache"); ValueError without one."""
        k = (purpose, device, self._site_wide(device))
        if k not in self._cache:
            self._cache[k] = sitekeys.signing_key(self.site, purpose, device, k[2])
        return self._cache[k]

    def whitelist_for(self, device: str, data: bytes) -> bytes:
        """A site-signed whitelist file as door `device` verifies it."""
        return retag(data, self.key("cache", device))
