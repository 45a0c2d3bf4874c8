"""Many doors' batches in one transaction (Store.store_batches, what the ingest does with
whatever arrived meanwhile): each door's watermark is exactly what its own batches allow, and
two platform instances storing one door's batches at the same moment leave no watermark behind
a batch either of them stored."""

from __future__ import annotations

import struct
import threading
import time

import pytest

from reference_platform.store import Store
from wire.codes import GAP as CODE_GAP


def ev(seq: int) -> tuple[int, int, int, int, int, int, int, str]:
    return (seq, 1, 1, 1767225600 + seq, 0, 1, 0, "")


def test_a_group_of_doors_gets_each_doors_own_watermark(db_url: str) -> None:
    s = Store(db_url)
    got = s.store_batches([
        ("a", [ev(i) for i in range(1, 17)]),
        ("b", [ev(i) for i in range(17, 33)]),  # b's first 16 not here yet: a hole
        ("a", [ev(i) for i in range(17, 21)]),
        ("c", [ev(1), ev(2), (3, CODE_GAP, 1, 0, 0, 0, 0, struct.pack("<II", 4, 9).hex()),
               ev(10)]),
        ("a", [ev(i) for i in range(1, 5)]),  # a resend: stored once
    ], presence=[("b", True, 3, "fw-1", 123.0)])
    assert got == {"a": 20, "b": 0, "c": 10}
    assert s.count("a") == 20 and s.count("b") == 16 and s.count("c") == 4
    assert s.device("b")["online"] and s.device("b")["boot"] == 3  # type: ignore[index]
    assert s.store_batches([("b", [ev(i) for i in range(1, 17)])]) == {"b": 32}
    assert [e[0] for e in s.events("b")] == list(range(1, 33))


def test_a_door_with_more_events_above_its_watermark_than_one_read_is_paged(db_url: str) -> None:
    s = Store(db_url)
    s.ADVANCE_SPAN = 10  # type: ignore[misc]
    assert s.store_batches([("a", [ev(i) for i in range(2, 40)])]) == {"a": 0}
    assert s.store_batches([("a", [ev(1)])]) == {"a": 39}
    assert s.ack_upto("a") == 39


def _waiting_on_locks(url: str, n: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        deadline = time.monotonic() + 30
        while c.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()").fetchone()[0] < n:  # type: ignore[index]
            assert time.monotonic() < deadline, "the two stores never waited"
            time.sleep(0.05)


def test_two_instances_storing_one_doors_batches_at_once_leave_no_watermark_behind(
        db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite takes one writer at a time (BEGIN IMMEDIATE): no such race")
    import psycopg

    Store(db_url).store_events("d", [])  # the door is known
    # A third session holds the door's row, so both instances reach the watermark at once.
    holder = psycopg.connect(db_url)
    holder.execute("SELECT * FROM devices WHERE device = 'd' FOR UPDATE")
    a, b = Store(db_url), Store(db_url)
    marks: dict[str, int] = {}
    threads = [threading.Thread(target=lambda s=s, k=k, r=r: marks.update(
                   {k: s.store_batches([("d", [ev(i) for i in r])])["d"]}))
               for s, k, r in ((a, "a", range(1, 17)), (b, "b", range(17, 33)))]
    for t in threads:
        t.start()
    _waiting_on_locks(db_url, 2)
    holder.rollback()
    for t in threads:
        t.join(30)
    holder.close()
    # Whichever committed last saw the other's batch: the watermark covers both.
    assert max(marks.values()) == 32
    assert Store(db_url).ack_upto("d") == 32


def test_two_instances_with_crossed_batches_and_presence_neither_deadlock_nor_lose_presence(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One instance stores d1's batch with d2's presence, the other d2's batch with d1's
    presence, both inside their transaction at the same moment: each waits for the other
    (no DeadlockDetected), and both doors end with their batches and their presence."""
    a, b = Store(db_url), Store(db_url)
    a.store_batches([("d1", [ev(1)]), ("d2", [ev(1)])])  # both doors known
    meet = threading.Barrier(2)
    original = Store._advance_many

    def advance_then_meet(self: Store, devices: list[str]) -> dict[str, int]:
        marks = original(self, devices)
        try:
            meet.wait(3)  # the other instance is (or would be) between its locks now
        except threading.BrokenBarrierError:
            pass  # it waits for our locks: the point of the test
        return marks

    monkeypatch.setattr(Store, "_advance_many", advance_then_meet)
    errors: list[BaseException] = []

    def store(s: Store, door: str, other: str) -> None:
        try:
            s.store_batches([(door, [ev(2)])], presence=[(other, True, 5, "fw", time.time())])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=store, args=(a, "d1", "d2")),
               threading.Thread(target=store, args=(b, "d2", "d1"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    for s in (a, b):
        for d in ("d1", "d2"):
            assert s.ack_upto(d) == 2
            assert s.device(d)["online"] and s.device(d)["boot"] == 5  # type: ignore[index]


def test_an_older_presence_stored_late_does_not_overwrite_a_newer_one(db_url: str) -> None:
    s = Store(db_url)
    s.store_batches([], presence=[("d1", True, 7, "fw", 200.0)])
    s.store_batches([], presence=[("d1", False, None, None, 100.0)])  # older, committed later
    assert s.device("d1")["online"] and s.device("d1")["presence_at"] == 200.0  # type: ignore[index]
