"""A door's whitelist answers reach the platform at QoS 0, so they can be lost. A door whose
answers to a fan-out and to its own retry were both lost keeps its place in
`platform.cache_states` (its last known state): a later sync over every known door serves it
again, instead of leaving it out until it reconnects. Real mosquitto, simulated doors that
check their pieces with their own keys, the platform on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from host_tools.cards.kit import SiteKit
from host_tools.doorsim import SimDoor
from host_tools.services.mosquitto import Mosquitto
from reference_platform.cards import CardRegistry
from reference_platform.distribute import attach, sync
from reference_platform.door_signing import DoorSigner
from reference_platform.ingest import Platform
from reference_platform.store import Store
from tests.host.services.test_platform_fanout_bulk import DoorsRunning


class MuteDoor(SimDoor):
    """A door that installs what it is sent while its answers are lost on the way (`mute`);
    its announce still gets through."""

    mute = False

    def _report(self, state: bytes) -> None:
        if not self.mute:
            super()._report(state)


def test_a_door_whose_answers_are_all_lost_stays_known_and_is_served_again(db_url: str) -> None:
    site = SiteKit(per_door=True)
    store = Store(db_url)
    reg = CardRegistry(store, site.keys)
    today = dt.date.today()
    for ref in ("ab" * 8, "cd" * 8):
        reg.issue(ref, "r-1", "101", [0], today - dt.timedelta(days=1), today + dt.timedelta(days=30))
    held = reg.version()
    names = [f"city.d{i}" for i in range(5)]
    signer = DoorSigner(site.keys)
    with Mosquitto() as broker:
        doors = [MuteDoor(d, [(broker.host, broker.port)], whitelist=held,
                          cache_key=signer.key("cache", d)) for d in names]
        mute = doors[2]
        p = Platform(store, broker.host, broker.port, ingest=False, site_keys=site.keys)
        registry_store = Store(db_url)
        attach(p, CardRegistry(registry_store, site.keys))
        try:
            with p:
                # Connected before the doors start: each door announces once, at its connect (an
                # answer to the platform's announce request, coming later, would say what it holds).
                assert p.connected.wait(30), "the platform did not connect"
                with DoorsRunning(doors):
                    announced = p.wait_cache_states(names, lambda s: True, 60)
                    assert sorted(announced) == sorted(names), "the doors did not announce themselves"
                    mute.mute = True
                    reg.report_lost("ab" * 8)
                    first = sync(p, reg, timeout=2)
                    assert first[mute.device] == "failed: no_answer"
                    assert mute.whitelist == reg.version()  # it took the file: only its answers were lost
                    assert {d: r for d, r in first.items() if d != mute.device} == {
                        d: f"updated to {reg.version()}" for d in names if d != mute.device}
                    assert sorted(p.cache_states) == names  # still known, by its last state
                    assert p.cache_states[mute.device]["version"] == held

                    mute.mute = False  # its answers get through again; it never reconnected
                    reg.report_lost("cd" * 8)
                    second = sync(p, reg, timeout=10)  # every door the platform knows
                    assert second == {d: f"updated to {reg.version()}" for d in names}
                    assert all(d.whitelist == reg.version() and d.refused == 0 for d in doors)
                    assert mute.connects == 1
                    assert p.cache_states[mute.device]["version"] == reg.version()
        finally:
            registry_store.close()
            store.close()


class LateDoor(MuteDoor):
    """A door whose next answer is lost once `on_lost` is set (which runs then); the ones after
    it get through."""

    on_lost: Callable[[], None] | None = None

    def _report(self, state: bytes) -> None:
        lost = self.on_lost
        if lost is not None:
            self.on_lost = None
            lost()
            return
        super()._report(state)


class DatabaseGoes(CardRegistry):
    """The registry's database goes away mid-sync (a PostgreSQL restart, say): from `gone` on,
    every version asked raises."""

    gone = False

    def version(self) -> int:
        if self.gone:
            raise ConnectionError("the database went away")
        return super().version()


def test_a_sync_that_fails_midway_keeps_the_doors_that_did_not_answer_known(db_url: str) -> None:
    """The doors whose answers were lost are put back in `cache_states` even when the sync
    stops on an error after the fan-out (its Resync thread logs it and the platform goes on):
    else they drop out of every later sync over the known doors until they reconnect."""
    site = SiteKit(per_door=True)
    store = Store(db_url)
    reg = DatabaseGoes(store, site.keys)
    today = dt.date.today()
    reg.issue("ab" * 8, "r-1", "101", [0], today - dt.timedelta(days=1), today + dt.timedelta(days=30))
    held = reg.version()
    names = [f"city.d{i}" for i in range(4)]
    signer = DoorSigner(site.keys)

    def database_goes() -> None:
        reg.gone = True

    with Mosquitto() as broker:
        doors = [MuteDoor(d, [(broker.host, broker.port)], whitelist=held,
                          cache_key=signer.key("cache", d)) for d in names]
        late = LateDoor("city.d1", [(broker.host, broker.port)], whitelist=held,
                        cache_key=signer.key("cache", "city.d1"))
        doors[1] = late
        p = Platform(store, broker.host, broker.port, ingest=False, site_keys=site.keys)
        try:
            with p:
                # Connected before the doors start: each door announces once, at its connect (an
                # answer to the platform's announce request, coming later, would say what it holds).
                assert p.connected.wait(30), "the platform did not connect"
                with DoorsRunning(doors):
                    got = p.wait_cache_states(names, lambda s: True, 60)
                    assert sorted(got) == names, "the doors did not announce themselves"
                    late.on_lost = database_goes  # its announce went through; its next answer is lost
                    doors[2].mute = True
                    reg.report_lost("ab" * 8)
                    with pytest.raises(ConnectionError):
                        sync(p, reg, timeout=2)
                    assert late.whitelist == doors[2].whitelist == held + 1  # both took the file
                    assert sorted(p.cache_states) == names  # the silent one still known
                    assert p.cache_states["city.d2"]["version"] == held
        finally:
            store.close()
