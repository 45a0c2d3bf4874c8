"""A whitelist fan-out waits for thousands of doors at once (Platform.wait_cache_states): a
door's answer counts when it arrives, one that answered before the wait counts too, one whose
state does not meet the condition yet is still awaited, and at the timeout the caller gets
the doors that did answer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire import common
from wire.door import encode_cache_state, encode_presence


def answer(p: Platform, device: str, version: int) -> None:
    p._handle(common.topic(device, "cache_state"), encode_cache_state(version))


def test_answers_are_taken_as_they_arrive_and_the_timeout_keeps_them(tmp_path: Path) -> None:
    p = Platform(Store(str(tmp_path / "p.db")), "127.0.0.1", 1, lease=False)  # never started
    answer(p, "d0", 5)  # before the wait
    answer(p, "d1", 4)  # an older version: not yet
    doors = [f"d{i}" for i in range(200)]

    def doors_answer() -> None:
        for d in doors[1:150]:
            answer(p, d, 5)

    t = threading.Thread(target=doors_answer)
    t.start()
    got = p.wait_cache_states(doors, lambda s: s["version"] >= 5, 3.0)
    t.join()
    assert sorted(got) == sorted(doors[:150])  # d150.. never answered: the wait ran out
    assert p._state_watches == []
    def the_rest_answer() -> None:
        for d in doors[150:]:
            answer(p, d, 5)

    all_in = threading.Thread(target=the_rest_answer)
    all_in.start()
    assert len(p.wait_cache_states(doors, lambda s: s["version"] >= 5, 30.0)) == 200
    all_in.join()



def test_a_fanout_asks_the_registry_for_its_version_once_not_once_per_door(tmp_path: Path) -> None:
    """Each version query is a database round trip: one per door made a city's lost card wait
    for 16,900 of them before the first piece left."""
    import datetime as dt

    from host_tools.cards.kit import SiteKit
    from reference_platform.cards import CardRegistry
    from reference_platform.distribute import sync

    site = SiteKit()
    store = Store(str(tmp_path / "p.db"))
    reg = CardRegistry(store, site.keys)
    today = dt.date.today()
    reg.issue("ab" * 8, "r-1", "101", [0], today, today + dt.timedelta(days=30))
    p = Platform(store, "127.0.0.1", 1, lease=False)  # never started: every door is current
    doors = [f"d{i}" for i in range(300)]
    for d in doors:
        answer(p, d, reg.version())
    asked = []
    version = reg.version

    def counted() -> int:
        asked.append(1)
        return version()

    reg.version = counted  # type: ignore[method-assign]
    assert sync(p, reg, doors) == {d: "current" for d in doors}
    assert 1 <= len(asked) <= 3


def test_a_door_online_has_its_cache_key_prepared_before_any_fanout(tmp_path: Path) -> None:
    """On a per-door site the platform derives a door's cache key when the door comes online,
    so a lost card's fan-out signs for every door without deriving one."""
    from host_tools.cards.kit import SiteKit

    site = SiteKit(per_door=True)
    p = Platform(Store(str(tmp_path / "p.db")), "127.0.0.1", 1, lease=False, site_keys=site.keys)
    assert p.signer is not None
    online = encode_presence(True, 1, "fw", "0a1b2c3d4e5f6071")
    p._handle(common.topic("city.d7", "presence"), online)
    assert set(p.signer._tags) == {"city.d7"}
    data = p.signer.whitelist_for("city.d7", b"\0" * 100)
    assert data == p.signer.tags("city.d7").sign_file(b"\0" * 100)


def test_a_door_that_took_the_file_before_it_was_sent_again_counts_as_updated(tmp_path: Path) -> None:
    """A door whose answer came after the fan-out's wait is sent the file again on its own; it
    refuses it as stale while holding that version (firmware/cache_sync.py): that door is
    updated, not failed (nor sent a snapshot it would refuse as well)."""
    import datetime as dt

    from host_tools.cards.kit import SiteKit
    from reference_platform.cards import CardRegistry
    from reference_platform.distribute import sync

    site = SiteKit()
    store = Store(str(tmp_path / "p.db"))
    reg = CardRegistry(store, site.keys)
    today = dt.date.today()
    reg.issue("ab" * 8, "r-1", "101", [0], today, today + dt.timedelta(days=30))
    p = Platform(store, "127.0.0.1", 1, lease=False)  # never started: the door answers here
    answer(p, "d1", reg.version())
    reg.report_lost("ab" * 8)
    sends: list[bytes] = []

    def door(device: str, leaf: str, payload: bytes, retain: bool = False) -> None:
        sends.append(payload)
        if len(sends) > 1:  # its answer to the first was late; this one it refuses as stale
            p._handle(common.topic(device, "cache_state"),
                      encode_cache_state(reg.version(), reason="stale_version"))

    p.publish = door  # type: ignore[method-assign]
    assert sync(p, reg, ["d1"], timeout=0.5) == {"d1": f"updated to {reg.version()}"}
    assert len(sends) == 2  # no snapshot after it



def test_answers_a_fanout_awaits_are_not_checked_again_by_the_resync_listener(tmp_path: Path) -> None:
    """The resync listener asks the registry (a database query) about each door's state; the
    answers a running fan-out awaits are that fan-out's to serve, so a city's thousands of
    answers cost no query each on the network thread. A state nobody awaits is still checked."""
    p = Platform(Store(str(tmp_path / "p.db")), "127.0.0.1", 1, lease=False)  # never started
    asked: list[str] = []

    class Listener:
        def wanted(self, state: dict[str, object]) -> bool:
            asked.append("?")
            return False

    p.whitelist_listener = Listener()
    doors = [f"d{i}" for i in range(100)]
    got: dict[str, dict[str, object]] = {}
    waiter = threading.Thread(target=lambda: got.update(
        p.wait_cache_states(doors, lambda s: s["version"] >= 5, 30.0)))
    waiter.start()
    while not p._state_watches:
        time.sleep(0.001)
    for d in doors:
        answer(p, d, 5)
    waiter.join()
    assert len(got) == 100 and asked == []
    answer(p, "d0", 5)  # nobody awaits it now
    assert asked == ["?"]


def test_answers_during_the_fanouts_sending_are_the_fanouts_too(tmp_path: Path) -> None:
    """A door can answer before the fan-out has sent to the last door: the fan-out's wait is in
    place before the first piece leaves, so no answer costs the resync listener's query."""
    import datetime as dt

    from host_tools.cards.kit import SiteKit
    from reference_platform.cards import CardRegistry
    from reference_platform.distribute import sync

    site = SiteKit()
    store = Store(str(tmp_path / "p.db"))
    reg = CardRegistry(store, site.keys)
    today = dt.date.today()
    reg.issue("ab" * 8, "r-1", "101", [0], today, today + dt.timedelta(days=30))
    p = Platform(store, "127.0.0.1", 1, lease=False)  # never started
    doors = [f"d{i}" for i in range(50)]
    for d in doors:
        answer(p, d, reg.version())
    reg.report_lost("ab" * 8)
    asked: list[str] = []

    class Listener:
        def wanted(self, state: dict[str, object]) -> bool:
            asked.append("?")
            return False

    p.whitelist_listener = Listener()

    def door_answers_at_once(device: str, leaf: str, payload: bytes, retain: bool = False) -> None:
        answer(p, device, reg.version())

    p.publish = door_answers_at_once  # type: ignore[method-assign]
    assert sync(p, reg, doors, timeout=10) == {d: f"updated to {reg.version()}" for d in doors}
    assert asked == []
