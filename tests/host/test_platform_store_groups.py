"""Many doors' batches in one transaction (Store.store_batches, what the ingest does with
whatever arrived meanwhile): each door's watermark is exactly what its own batches allow, and
two platform instances storing one door's batches at the same moment leave no watermark behind
a batch either of them stored."""

from __future__ import annotations

import struct
import threading
import time

import pytest

from firmware.journal import CODE_GAP
from host_tools.platform.store import Store


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
