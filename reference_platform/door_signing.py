"""Which key signs what the platform sends one door (docs/threat-model.md, "Stolen or opened
controller").

On a per-door site (its key file has `door_master`) every door holds its own `command` and
`cache` keys, so the platform signs each door's commands, times, acknowledgements, whitelist
files and pieces with that door's keys: what a thief takes from one door verifies at no
other. Which keys a door holds is the site file's record (`sitekeys.door_scope`: on a site
moved to per-door keys, the doors commissioned since hold their own, the others the site-wide
ones), never the door's registration, which anyone on the broker can publish: a registration
makes the platform read the site file again (a door just commissioned, a door revoked with
`doorctl card keys revoke-door`: its new key epoch), and one that disagrees with the record is
a `key_scope_mismatch` alarm, signing nothing differently.
An older site file (no `door_master`) signs every door with its site-wide keys, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from host_tools.cards import sitekeys
from reference_platform.cache_tags import CacheTags


def retag(data: bytes, key: bytes) -> bytes:
    """A signed whitelist file (snapshot or delta) with its tag made again under `key`: the
    same content, signed for the door that holds `key`."""
    return CacheTags(key).sign_file(data)


class DoorSigner:
    """The signing keys per door, from the site key file's content; no key leaves it except
    to the caller that signs."""

    RELOAD_EVERY_S = 10.0  # a flood of forged registrations reads the site file this often at most

    def __init__(self, site: dict[str, Any],
                 reload: Callable[[], dict[str, Any]] | None = None) -> None:
        self.site = site
        self.per_door = sitekeys.per_door(site)
        self._reload = reload
        self._reloaded_at = 0.0
        self.disputed: dict[str, str] = {}  # device -> the keys it claims, against the record
        self._cache: dict[tuple[str, str], bytes] = {}
        self._tags: dict[str, CacheTags] = {}  # device -> its cache key, prepared (a fan-out)

    def __repr__(self) -> str:
        return f"<DoorSigner site={self.site.get('site_id')} per_door={self.per_door} keys hidden>"

    def scope(self, device: str) -> str:
        """"door" or "site": the keys the site file records for `device`."""
        return sitekeys.door_scope(self.site, device)

    def _signed_as(self, device: str) -> tuple[str, int]:
        return self.scope(device), sitekeys.door_epoch(self.site, device)

    def registered(self, device: str, keys: str) -> bool:
        """The door says which keys it holds ("door" or "site"; a claim decides nothing). The
        site file is read again (at most every RELOAD_EVERY_S): a door just commissioned on a
        migrated site, or a replacement after `revoke-door`, registers when it connects. True
        when that changed how the door is signed for."""
        before = self._signed_as(device)
        if self._reload is not None and time.monotonic() - self._reloaded_at >= self.RELOAD_EVERY_S:
            self._reloaded_at = time.monotonic()
            try:
                site = self._reload()
            except Exception:  # unreadable now (being written): keep the record in memory
                site = None
            if site is not None and site.get("site_id") == self.site.get("site_id"):
                self.site, self.per_door = site, sitekeys.per_door(site)
                self._cache.clear()
                self._tags.clear()
        if keys != self.scope(device):
            self.disputed[device] = keys
        else:
            self.disputed.pop(device, None)
        return before != self._signed_as(device)

    def key(self, purpose: str, device: str) -> bytes:
        """Door `device`'s key for `purpose` ("command" or "cache"); ValueError without one."""
        k = (purpose, device)
        if k not in self._cache:
            self._cache[k] = sitekeys.signing_key(self.site, purpose, device)
        return self._cache[k]

    def tags(self, device: str) -> CacheTags:
        """Door `device`'s cache key, prepared once: a fan-out signs a file and its pieces for
        each of thousands of doors. Derived again after the site file is read again (a key
        epoch that moved)."""
        tags = self._tags.get(device)
        if tags is None:
            tags = self._tags[device] = CacheTags(self.key("cache", device))
        return tags

    def whitelist_for(self, device: str, data: bytes) -> bytes:
        """A site-signed whitelist file as door `device` verifies it."""
        return self.tags(device).sign_file(data)
