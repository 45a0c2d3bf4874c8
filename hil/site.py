"""The site around a door under test, the same on every rig: the site's keys and cards, the
reference platform that stores the door's events, and the signed whitelist updates it sends."""

from __future__ import annotations

import time
from typing import Any

from hil.rig import DEVICE, wait_for
from host_tools.cards.kit import SiteKit
from offline_cache import fmt
from reference_platform.distribute import push
from reference_platform.ingest import Platform

# The whitelist a door under test is commissioned with: (role, status, master).
WHITELIST = (("resident", fmt.ACTIVE, False), ("master", fmt.ACTIVE, True), ("lost", fmt.LOST, False))


class DoorSite:
    """Platform-side half of a `hil.rig.Door`: subclasses set `site`, `refs` and `platform`."""

    device_id = DEVICE
    site: SiteKit
    refs: dict[str, bytes]
    platform: Platform
    version = 1

    def first_snapshot(self) -> bytes:
        return self.site.for_door(self.site.snapshot(1, [(self.refs[role], status, master)
                                                         for role, status, master in WHITELIST]),
                                  self.device_id)

    def state(self) -> dict[str, Any]:
        return self.platform.store.device(self.device_id) or {}

    def events(self, code: int | None = None) -> list[tuple[Any, ...]]:
        return [e for e in self.platform.store.events(self.device_id)
                if code is None or e[1] == code]

    def wait_event(self, code: int, count: int = 1, timeout: float = 20.0) -> float:
        """Seconds until `count` events with this code are stored at the platform."""
        t0 = time.monotonic()
        wait_for(lambda: len(self.events(code)) >= count, timeout, f"event {code} at the platform")
        return time.monotonic() - t0

    def revoke(self, name: str, status: int = fmt.LOST) -> None:
        """The platform reports a card lost: a signed delta to the door, confirmed."""
        self.version += 1
        push(self.platform, self.device_id,
             self.site.delta(self.version, self.version - 1, [(self.refs[name], status, False)]),
             key=self.site.cache_key)
