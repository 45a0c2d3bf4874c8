"""A site in a box: keys, personalized virtual cards and signed whitelists, for the demo,
the tests, the benchmarks and the virtual HIL rig. Real keys, real card sessions, real
signatures: only the cards are virtual."""

from __future__ import annotations

import os
import time
from typing import Any

from crypto.keystore import SoftwareKeyStore
from host_tools import cache_build
from host_tools.cards import sitekeys, vcard
from host_tools.cards.personalize import personalize
from offline_cache import fmt
from wire import card_profile as profile
from wire.common import SITE_TZ_MIN

TZ_MIN = SITE_TZ_MIN  # site local time


def today(tz_min: int = TZ_MIN) -> int:
    """Today as days since 1970-01-01 in site local time (the cache's day numbers)."""
    return (int(time.time()) + tz_min * 60) // 86400


class SiteKit:
    def __init__(self, site_id: int = 1001, per_door: bool = False) -> None:
        """`per_door`: every door gets its own command and cache keys (door_keys(device))."""
        self.site_id = site_id
        self.keys = sitekeys.new_site_keys(site_id, per_door=per_door)
        self.keys["keys"].setdefault("cache", os.urandom(32).hex())
        self.keys["keys"].setdefault("command", os.urandom(32).hex())
        self.store = SoftwareKeyStore.from_dict(self.keys)

    @classmethod
    def from_keys(cls, keys: dict[str, Any]) -> SiteKit:
        """The kit of an existing site, from its key file's content (sitekeys.load); cards
        issued with those keys (a bench's physical test cards) are this site's."""
        kit = cls.__new__(cls)
        kit.site_id = int(keys["site_id"])
        kit.keys = keys
        kit.keys["keys"].setdefault("cache", os.urandom(32).hex())
        kit.keys["keys"].setdefault("command", os.urandom(32).hex())
        kit.store = SoftwareKeyStore.from_dict(kit.keys)
        return kit

    @property
    def cache_key(self) -> bytes:
        return bytes.fromhex(self.keys["keys"]["cache"])

    @property
    def command_key(self) -> bytes:
        """The site's `command` key: signs commands and the platform's acknowledgements."""
        return bytes.fromhex(self.keys["keys"]["command"])

    def door_keys(self, device: str | None = None) -> dict[str, Any]:
        """The key file a door of this site gets (no application master key; on a per-door
        site, door `device`'s own command and cache keys)."""
        return sitekeys.device_keys(self.keys, device if sitekeys.per_door(self.keys) else None)

    def for_door(self, data: bytes, device: str) -> bytes:
        """A whitelist file of this kit as door `device` verifies it (signed again with the
        door's own cache key on a per-door site)."""
        if not sitekeys.per_door(self.keys):
            return data
        from reference_platform.door_signing import retag

        return retag(data, self.door_key("cache", device))

    def platform_keys(self) -> dict[str, Any]:
        """Platform(...) keyword arguments that sign for this kit's doors: the site file on a
        per-door site (each door's own keys), else the site-wide command key."""
        if sitekeys.per_door(self.keys):
            return {"site_keys": self.keys}
        return {"ack_key": self.command_key}

    def door_key(self, purpose: str, device: str) -> bytes:
        """Door `device`'s key for "command" or "cache" (the site-wide one on an older site)."""
        return sitekeys.signing_key(self.keys, purpose, device)

    def issue(self) -> tuple[vcard.VirtualDesfire, bytes]:
        """A new virtual DESFire EV2 card personalized for this site, and its reference."""
        card = vcard.VirtualDesfire()
        return card, personalize(card.process, self.store).ref

    def uid_ref(self, uid: bytes) -> bytes:
        """The reference of a UID-only card (legacy profile)."""
        return bytes(profile.uid_ref(self.store, uid))

    def snapshot(self, version: int, cards: list[tuple[bytes, int, bool]], doors: int = 0xFFFF,
                 valid_days: int = 365) -> bytes:
        """A signed full snapshot: (ref, status, master) per card, valid from yesterday."""
        d = today()
        recs = [cache_build.pack_record(ref, status, master, 0, d - 1, d + valid_days, doors)
                for ref, status, master in cards]
        return cache_build.build(self.cache_key, fmt.KIND_SNAPSHOT, version, 0, self.site_id, 0xFFFF,
                         TZ_MIN, recs, {}, [], int(time.time()))

    def delta(self, version: int, base: int, cards: list[tuple[bytes, int, bool]],
              doors: int = 0xFFFF, valid_days: int = 365) -> bytes:
        """A signed delta on top of version `base`."""
        d = today()
        recs = [cache_build.pack_record(ref, status, master, 0, d - 1, d + valid_days, doors)
                for ref, status, master in cards]
        return cache_build.build(self.cache_key, fmt.KIND_DELTA, version, base, self.site_id, 0xFFFF,
                         TZ_MIN, recs, {}, [], int(time.time()))

    def door_config(self, device_id: str, door_no: int = 0, **extra: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {"device_id": device_id, "site_id": self.site_id, "door_no": door_no}
        cfg.update(extra)
        return cfg
