"""The platform's card registry against the door's own cache code: a landlord's hold outlives
a loss report and a reissue, a reissue is one update, and an operation checks the card inside
its own transaction (two operators on one database)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from host_tools.cards.kit import SiteKit
from offline_cache.cache import Cache
from reference_platform.cards import CardError, CardRegistry
from reference_platform.store import Store
from wire.common import SITE_TZ_MIN

TODAY = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=SITE_TZ_MIN)).date()  # the site's day
YEAR = dt.timedelta(days=365)
A, B, C = "aa" * 8, "bb" * 8, "cc" * 8


class DoorCache:
    """A door's whitelist, fed the registry's deltas as the platform sends them."""

    def __init__(self, folder: Path, site: SiteKit) -> None:
        folder.mkdir()
        self.cache = Cache(str(folder), bytes.fromhex(site.keys["keys"]["cache"]), site.site_id)

    def sync(self, reg: CardRegistry) -> None:
        data = reg.update_for(self.cache.version)
        if data is not None:
            self.cache.apply_bytes(data)

    def decide(self, ref: str) -> tuple[bool, str]:
        granted, reason, _master = self.cache.decide(bytes.fromhex(ref), 0, int(time.time()))
        return granted, reason


@pytest.fixture
def site() -> SiteKit:
    return SiteKit()


@pytest.fixture
def reg(db_url: str, site: SiteKit) -> CardRegistry:
    return CardRegistry(Store(db_url), site.keys)


@pytest.fixture
def door(tmp_path: Path, site: SiteKit) -> DoorCache:
    return DoorCache(tmp_path / "door", site)


def _issue(reg: CardRegistry, ref: str, resident: str = "r-101-1") -> int:
    return reg.issue(ref, resident, "101", [0], TODAY - YEAR, TODAY + YEAR)


def test_a_suspended_card_reported_lost_and_found_is_still_suspended(reg: CardRegistry,
                                                                     door: DoorCache) -> None:
    _issue(reg, A)
    reg.suspend(A)
    reg.report_lost(A)
    reg.unblock(A)
    door.sync(reg)
    assert reg.card(A)["status"] == "suspended"  # type: ignore[index]
    assert door.decide(A) == (False, "suspended")
    reg.resume(A)  # only the landlord's resume gives access back
    door.sync(reg)
    assert door.decide(A) == (True, "granted")


def test_a_suspended_residents_new_card_is_suspended_too(reg: CardRegistry, door: DoorCache) -> None:
    _issue(reg, A)
    reg.suspend(A)
    reg.reissue(A, B)
    door.sync(reg)
    assert door.decide(A) == (False, "cancelled") and door.decide(B) == (False, "suspended")
    reg.resume(B)
    door.sync(reg)
    assert door.decide(B) == (True, "granted")


def test_a_reissue_is_one_update_and_a_refused_one_changes_nothing(reg: CardRegistry,
                                                                  door: DoorCache) -> None:
    _issue(reg, A)
    _issue(reg, C, "r-102-1")
    door.sync(reg)
    before = reg.version()
    with pytest.raises(CardError, match="already issued"):
        reg.reissue(A, C)  # the new reference is another resident's card
    assert reg.version() == before
    assert reg.card(A)["status"] == "active" and reg.card(A)["replaced_by"] is None  # type: ignore[index]
    v = reg.reissue(A, B)
    assert v == before + 1  # cancel and issue in one version
    door.sync(reg)
    assert door.cache.version == v
    assert door.decide(A) == (False, "cancelled") and door.decide(B) == (True, "granted")


def test_an_operation_checks_the_card_inside_its_own_transaction(db_url: str, site: SiteKit,
                                                                door: DoorCache,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Two operators, two processes' stores on one database: one unblocks a lost card while
    # the other cancels it, the cancel landing right after the first looked the card up. The
    # cancel must not be written over: the card ends cancelled at the platform and the door.
    first = CardRegistry(Store(db_url), site.keys)
    second = CardRegistry(Store(db_url), site.keys)
    _issue(first, A)
    first.report_lost(A)
    looked_up = first.card
    cancelled = []

    def card_then_the_other_operator(ref: str):  # type: ignore[no-untyped-def]
        found = looked_up(ref)
        if not cancelled:
            cancelled.append(second.cancel(A))
        return found

    monkeypatch.setattr(first, "card", card_then_the_other_operator)
    try:
        first.unblock(A)
    except CardError:
        pass  # it saw the cancel
    if not cancelled:
        cancelled.append(second.cancel(A))  # the unblock looked only inside its transaction
    assert first.card(A)["status"] == "cancelled"  # type: ignore[index]
    door.sync(first)
    assert door.decide(A) == (False, "cancelled")


def test_a_registry_from_before_holds_keeps_its_suspensions(db_url: str, site: SiteKit) -> None:
    reg = CardRegistry(Store(db_url), site.keys)
    _issue(reg, A)
    reg.suspend(A)
    with reg.store.transaction() as tx:  # as an older registry left it: suspended, no hold
        tx.execute("DELETE FROM holds")
    again = CardRegistry(Store(db_url), site.keys)
    again.report_lost(A)
    again.unblock(A)
    assert again.card(A)["status"] == "suspended"  # type: ignore[index]


def test_a_store_transaction_is_all_or_nothing_and_a_failed_query_leaves_the_store_usable(
        db_url: str) -> None:
    store = Store(db_url)
    store.ensure_table("CREATE TABLE IF NOT EXISTS notes (k TEXT PRIMARY KEY, v INTEGER)")
    with store.transaction() as tx:
        tx.execute("INSERT INTO notes (k, v) VALUES (?, ?)", ("a", 1))
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.execute("INSERT INTO notes (k, v) VALUES (?, ?)", ("b", 2))
        assert tx.row("SELECT v FROM notes WHERE k = ?", ("b",), for_update=True) == (2,)
        raise RuntimeError("cut short")
    assert store.rows("SELECT k, v FROM notes ORDER BY k") == [("a", 1)]
    with pytest.raises(Exception):  # noqa: B017 - either driver's own error
        store.rows("SELECT * FROM no_such_table")
    assert store.row("SELECT v FROM notes WHERE k = ?", ("a",)) == (1,)
    assert store.row("SELECT v FROM notes WHERE k = ?", ("zz",)) is None
