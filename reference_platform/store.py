"""The reference platform's storage: events stored once per (device, seq), device state, gaps.

SQLite by default (WAL mode, so several ingest processes can share one file); PostgreSQL
when given a `postgresql://` URL (needs the `psycopg` package). The acknowledgement
watermark of a device is the highest sequence number up to which every event is either
stored or reported lost by the device itself (a GAP event, or a `gone` range in answer to a
resend request); only that is ever acknowledged, so the device never deletes an event the
platform does not hold.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from wire.codes import GAP as CODE_GAP

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS events (
        device TEXT NOT NULL, seq BIGINT NOT NULL, code INTEGER NOT NULL, boot INTEGER NOT NULL,
        t BIGINT NOT NULL, ms INTEGER NOT NULL, flags INTEGER NOT NULL, arg INTEGER NOT NULL,
        data TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (device, seq))""",
    """CREATE TABLE IF NOT EXISTS devices (
        device TEXT PRIMARY KEY, ack_upto BIGINT NOT NULL DEFAULT 0,
        online INTEGER NOT NULL DEFAULT 0, boot INTEGER, firmware TEXT,
        presence_at DOUBLE PRECISION, status TEXT, status_at DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS gaps (
        device TEXT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,
        kind TEXT NOT NULL, seen_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (device, first_seq, kind))""",
    # What each door says it was commissioned as (its retained `register` message): no keys,
    # no personal data.
    """CREATE TABLE IF NOT EXISTS registrations (
        device TEXT PRIMARY KEY, site BIGINT NOT NULL, door_no INTEGER NOT NULL,
        firmware TEXT NOT NULL, lock TEXT NOT NULL, cards TEXT NOT NULL, tls INTEGER NOT NULL,
        client_cert INTEGER NOT NULL, commissioned_at BIGINT NOT NULL,
        registered_at DOUBLE PRECISION NOT NULL)""",
    # Singleton work among platform instances on one database (reference_platform/lease.py).
    """CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL)""",
]

EventRow = tuple[int, int, int, int, int, int, int, str]
Presence = tuple[str, bool, int | None, str | None, float]  # device, online, boot, firmware, at


def _past_lost(upto: int, lost: Sequence[tuple[int, int]]) -> int:
    """The watermark moved over every reported-lost range it touches."""
    moved = True
    while moved:
        moved = False
        for first, last in lost:
            if first <= upto + 1 <= last:
                upto, moved = last, True
    return upto


def _walk(upto: int, lost: Sequence[tuple[int, int]], seqs: Sequence[int]) -> tuple[int, bool]:
    """The watermark moved over stored sequence numbers `seqs` (ascending, all above it) and
    lost ranges; (new watermark, True when a hole stopped it)."""
    for seq in seqs:
        upto = _past_lost(upto, lost)
        if seq == upto + 1:
            upto = seq
        elif seq > upto + 1:
            return _past_lost(upto, lost), True
    return _past_lost(upto, lost), False


class Store:
    def __init__(self, url: str = "sqlite:///platform.db") -> None:
        self.url = url
        self._lock = threading.Lock()
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            import psycopg

            self._conn: Any = psycopg.connect(url)
            self._ph = "%s"
        else:
            path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
            self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False,
                                         isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._ph = "?"
        with self._lock:
            self._begin()
            for stmt in SCHEMA:
                self._conn.execute(stmt)
            self._conn.commit() if self._ph == "%s" else self._conn.execute("COMMIT")

    def _q(self, sql: str) -> str:
        return sql.replace("?", self._ph)

    def _begin(self) -> None:
        if self._ph == "?":
            self._conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        if self._ph == "?":
            self._conn.execute("COMMIT")
        else:
            self._conn.commit()

    def _rollback(self) -> None:
        if self._ph == "?":
            self._conn.execute("ROLLBACK")
        else:
            self._conn.rollback()

    def close(self) -> None:
        self._conn.close()

    # -- ingest ----------------------------------------------------------------------

    def store_events(self, device: str, events: Sequence[EventRow],
                     gone: tuple[int, int] | None = None) -> int:
        """Store a batch durably (idempotent); returns the device's new ack watermark.
        `gone`: a range the device says it no longer holds (its answer to a resend request)."""
        return self.store_batches([(device, events)], gone={device: gone} if gone else None)[device]

    def store_batches(self, batches: Sequence[tuple[str, Sequence[EventRow]]],
                      presence: Sequence[Presence] = (),
                      gone: dict[str, tuple[int, int]] | None = None) -> dict[str, int]:
        """Store many doors' batches (and presence changes) in one transaction; returns each
        device's new ack watermark, valid once this returns (after the commit).

        One commit and a handful of round trips for the whole group, whatever its size: the
        ingest hands over every batch that arrived meanwhile (scale.events_per_s). Rows are
        written in (device, seq) order and the devices' rows locked in device order, so two
        instances storing overlapping groups wait for each other instead of deadlocking; with
        the lock, the later of two concurrent transactions sees the other's events, so neither
        leaves the watermark behind a batch the other stored."""
        now = time.time()
        rows = sorted({(device, *e, now) for device, events in batches for e in events},
                      key=lambda r: (r[0], r[1]))
        lost = [(device, first, last, "gone", now)
                for device, (first, last) in sorted((gone or {}).items())]
        for r in rows:
            if r[2] == CODE_GAP and len(r[8]) >= 16:
                first, last = struct.unpack("<II", bytes.fromhex(r[8][:16]))
                lost.append((r[0], first, last, "lost_at_device", now))
        devices = sorted({d for d, _ in batches} | {p[0] for p in presence})
        with self._lock:
            self._begin()
            try:
                cur = self._conn.cursor()
                cur.executemany(self._q(
                    "INSERT INTO devices (device) VALUES (?) ON CONFLICT DO NOTHING"),
                    [(d,) for d in devices])
                if self._ph == "%s":
                    # Every door the group touches, batches and presence alike, locked in
                    # device order before anything else: two instances whose groups overlap
                    # (one stores d1's batch and d2's presence, the other the reverse) wait
                    # for each other instead of deadlocking.
                    where, params = self._in("device", devices)
                    self._conn.execute(f"SELECT device FROM devices WHERE {where}"
                                       " ORDER BY device FOR UPDATE", params).fetchall()
                if lost:
                    cur.executemany(self._q(
                        "INSERT INTO gaps (device, first_seq, last_seq, kind, seen_at)"
                        " VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING"), lost)
                if rows:
                    cur.executemany(self._q(
                        "INSERT INTO events (device, seq, code, boot, t, ms, flags, arg, data,"
                        " received_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"), rows)
                marks = self._advance_many(sorted({d for d, _ in batches}))
                if presence:
                    cur.executemany(self._q(
                        "UPDATE devices SET online=?, boot=COALESCE(?, boot),"
                        " firmware=COALESCE(?, firmware), presence_at=? WHERE device=?"
                        " AND (presence_at IS NULL OR presence_at <= ?)"),
                        # An older presence committed late (by another instance) never
                        # overwrites a newer one.
                        [(1 if online else 0, boot, fw, at, d, at)
                         for d, online, boot, fw, at in presence])
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return marks

    # -- for the platform's other tables (card registry, key progress, scope alarms) ------

    def ensure_table(self, ddl: str) -> None:
        """Create a module's own table (`CREATE TABLE IF NOT EXISTS ...`) in its transaction."""
        with self.transaction() as tx:
            tx.execute(ddl)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction with the store's lock held: committed when the block ends,
        rolled back on any error (nothing half-done stays in the database). SQL is written with
        `?` placeholders for either database."""
        with self._lock:
            self._begin()
            try:
                yield Transaction(self)
            except BaseException:
                self._rollback()
                raise
            self._commit()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of one query (`?` placeholders), outside any write transaction. On
        PostgreSQL a failed query is rolled back, so the connection stays usable."""
        with self._lock:
            try:
                return [tuple(r) for r in self._conn.execute(self._q(sql), tuple(params)).fetchall()]
            except Exception:
                if self._ph == "%s":
                    self._conn.rollback()
                raise

    def row(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of one query, or None."""
        found = self.rows(sql, params)
        return found[0] if found else None

    def _ensure_device(self, device: str) -> None:
        self._conn.execute(self._q(
            "INSERT INTO devices (device) VALUES (?) ON CONFLICT DO NOTHING"), (device,))

    def _in(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        """`column IN (values)` as SQL and its parameters, in this database's form."""
        if self._ph == "%s":
            return f"{column} = ANY(%s)", [list(values)]
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    ADVANCE_SPAN = 5000  # events above a watermark read at once

    def _advance_many(self, devices: Sequence[str]) -> dict[str, int]:
        """Move each device's watermark over what is stored or reported lost (in this
        transaction): three queries for all of them, the devices' rows locked first."""
        if not devices:
            return {}
        where, params = self._in("device", devices)
        lock = " ORDER BY device FOR UPDATE" if self._ph == "%s" else ""
        start = {str(d): int(u) for d, u in self._conn.execute(
            f"SELECT device, ack_upto FROM devices WHERE {where}{lock}", params).fetchall()}
        lost: dict[str, list[tuple[int, int]]] = {d: [] for d in devices}
        for d, first, last in self._conn.execute(
                f"SELECT device, first_seq, last_seq FROM gaps WHERE {where}", params).fetchall():
            if int(last) > start[d]:
                lost[d].append((int(first), int(last)))
        ewhere, eparams = self._in("e.device", devices)
        seqs: dict[str, list[int]] = {d: [] for d in devices}
        for d, seq in self._conn.execute(self._q(
                "SELECT e.device, e.seq FROM events e JOIN devices v ON v.device = e.device"
                f" WHERE {ewhere} AND e.seq > v.ack_upto AND e.seq <= v.ack_upto + ?"
                " ORDER BY e.device, e.seq"), [*eparams, self.ADVANCE_SPAN]).fetchall():
            seqs[d].append(int(seq))
        out: dict[str, int] = {}
        moved: list[tuple[int, str, int]] = []
        for d in devices:
            upto, blocked = _walk(start[d], lost[d], seqs[d])
            if not blocked and upto + 1 > start[d] + self.ADVANCE_SPAN:
                out[d] = self._advance(d)  # more above than was read: page through the rest
                continue
            out[d] = upto
            if upto > start[d]:
                moved.append((upto, d, upto))
        if moved:
            self._conn.cursor().executemany(self._q(
                "UPDATE devices SET ack_upto=? WHERE device=? AND ack_upto < ?"), moved)
        return out

    def _advance(self, device: str) -> int:
        row = self._conn.execute(self._q("SELECT ack_upto FROM devices WHERE device=?"),
                                 (device,)).fetchone()
        start = upto = int(row[0])
        lost = [(int(a), int(b)) for a, b in self._conn.execute(self._q(
            "SELECT first_seq, last_seq FROM gaps WHERE device=? AND last_seq > ?"),
            (device, upto)).fetchall()]
        blocked = False
        while not blocked:
            seqs = [int(r[0]) for r in self._conn.execute(self._q(
                "SELECT seq FROM events WHERE device=? AND seq > ? ORDER BY seq LIMIT 5000"),
                (device, upto)).fetchall()]
            if not seqs:
                break
            upto, blocked = _walk(upto, lost, seqs)
        upto = _past_lost(upto, lost)
        if upto > start:
            self._conn.execute(self._q(
                "UPDATE devices SET ack_upto=? WHERE device=? AND ack_upto < ?"),
                (upto, device, upto))
        return upto

    def take_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        """Take the lease `name` for `holder` until `expires_at`, or renew it; False while
        another holder's term runs. One transaction: two instances cannot both take it."""
        with self._lock:
            self._begin()
            try:
                row = self._conn.execute(self._q(
                    "SELECT holder, expires_at FROM leases WHERE name=?"
                    + (" FOR UPDATE" if self._ph == "%s" else "")), (name,)).fetchone()
                if row is None:
                    self._conn.execute(self._q(
                        "INSERT INTO leases (name, holder, expires_at) VALUES (?,?,?)"
                        " ON CONFLICT DO NOTHING"), (name, holder, expires_at))
                elif row[0] == holder or float(row[1]) < now:
                    self._conn.execute(self._q(
                        "UPDATE leases SET holder=?, expires_at=? WHERE name=?"),
                        (holder, expires_at, name))
                got = self._conn.execute(self._q("SELECT holder FROM leases WHERE name=?"),
                                         (name,)).fetchone()
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return got is not None and got[0] == holder

    def drop_lease(self, name: str, holder: str) -> None:
        with self._lock:
            self._begin()
            self._conn.execute(self._q("DELETE FROM leases WHERE name=? AND holder=?"), (name, holder))
            self._commit()

    def record_presence(self, device: str, online: bool, boot: int | None,
                        firmware: str | None) -> None:
        self.store_batches([], [(device, online, boot, firmware, time.time())])

    def record_status(self, device: str, status: dict[str, Any]) -> None:
        with self._lock:
            self._begin()
            self._ensure_device(device)
            self._conn.execute(self._q("UPDATE devices SET status=?, status_at=? WHERE device=?"),
                               (json.dumps(status), time.time(), device))
            self._commit()

    def record_registration(self, device: str, reg: dict[str, Any]) -> None:
        """Keep the door's latest registration (a decoded `register` message)."""
        row = (int(reg["site"]), int(reg["door"]), str(reg["fw"]), str(reg["lock"]),
               json.dumps(list(reg["cards"])), 1 if reg["tls"] else 0,
               1 if reg["client_cert"] else 0, int(reg["commissioned_at"]), time.time())
        with self._lock:
            self._begin()
            self._ensure_device(device)
            self._conn.execute(self._q(
                "INSERT INTO registrations (device, site, door_no, firmware, lock, cards, tls,"
                " client_cert, commissioned_at, registered_at) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (device) DO UPDATE SET site=excluded.site, door_no=excluded.door_no,"
                " firmware=excluded.firmware, lock=excluded.lock, cards=excluded.cards,"
                " tls=excluded.tls, client_cert=excluded.client_cert,"
                " commissioned_at=excluded.commissioned_at, registered_at=excluded.registered_at"),
                (device, *row))
            self._commit()

    def registration(self, device: str) -> dict[str, Any] | None:
        row = self.row("SELECT site, door_no, firmware, lock, cards, tls, client_cert, commissioned_at,"
                       " registered_at FROM registrations WHERE device=?", (device,))
        if row is None:
            return None
        keys = ["site", "door", "fw", "lock", "cards", "tls", "client_cert", "commissioned_at",
                "registered_at"]
        out = dict(zip(keys, row, strict=True))
        out["cards"] = json.loads(out["cards"])
        out["tls"], out["client_cert"] = bool(out["tls"]), bool(out["client_cert"])
        return out

    def retire(self, device: str) -> None:
        """Forget a door id's state and registration (a door re-commissioned under another id);
        its events stay, as evidence. A message from that id makes it known again."""
        with self._lock:
            self._begin()
            try:
                self._conn.execute(self._q("DELETE FROM registrations WHERE device=?"), (device,))
                self._conn.execute(self._q("DELETE FROM devices WHERE device=?"), (device,))
                self._commit()
            except BaseException:
                self._rollback()
                raise

    # -- queries ---------------------------------------------------------------------

    def events(self, device: str) -> list[EventRow]:
        with self._lock:
            rows = self._conn.execute(self._q(
                "SELECT seq, code, boot, t, ms, flags, arg, data FROM events WHERE device=?"
                " ORDER BY seq"), (device,)).fetchall()
        return [tuple(r) for r in rows]

    def ack_upto(self, device: str) -> int:
        with self._lock:
            row = self._conn.execute(self._q("SELECT ack_upto FROM devices WHERE device=?"),
                                     (device,)).fetchone()
        return int(row[0]) if row else 0

    def missing(self, device: str) -> list[tuple[int, int]]:
        """Sequence ranges not stored and not reported lost by the device, below the newest."""
        have = [e[0] for e in self.events(device)]
        with self._lock:
            lost = self._conn.execute(self._q(
                "SELECT first_seq, last_seq FROM gaps WHERE device=?"), (device,)).fetchall()
        covered = set(have)
        for first, last in lost:
            covered.update(range(first, last + 1))
        out: list[tuple[int, int]] = []
        if not have:
            return out
        start = None
        for s in range(1, max(have) + 1):
            if s not in covered and start is None:
                start = s
            elif s in covered and start is not None:
                out.append((start, s - 1))
                start = None
        return out

    def next_stored(self, device: str, after: int) -> int | None:
        """The lowest stored sequence number above `after`, None if there is none."""
        with self._lock:
            row = self._conn.execute(self._q(
                "SELECT MIN(seq) FROM events WHERE device=? AND seq > ?"), (device, after)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def lost(self, device: str) -> list[dict[str, Any]]:
        """Events the device reported lost (a GAP event, or `gone` in answer to a resend) and
        the platform does not hold: merged ranges with their size and the time span they lie
        in (`after`/`before`: UTC seconds of the stored events around them, None if unknown).
        """
        with self._lock:
            ranges = sorted((int(a), int(b)) for a, b in self._conn.execute(self._q(
                "SELECT first_seq, last_seq FROM gaps WHERE device=?"), (device,)).fetchall())
        merged: list[list[int]] = []
        for a, b in ranges:
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        out: list[dict[str, Any]] = []
        for a, b in merged:
            with self._lock:
                held = [int(r[0]) for r in self._conn.execute(self._q(
                    "SELECT seq FROM events WHERE device=? AND seq BETWEEN ? AND ? ORDER BY seq"),
                    (device, a, b)).fetchall()]
            start = a
            for seq in held + [b + 1]:
                if seq > start:
                    out.append(self._lost_range(device, start, seq - 1))
                start = seq + 1
        return out

    def _lost_range(self, device: str, first: int, last: int) -> dict[str, Any]:
        # The nearest stored events with a UTC time on either side (a gap event itself has none).
        with self._lock:
            after = self._conn.execute(self._q(
                "SELECT t FROM events WHERE device=? AND seq < ? AND (flags & 1) = 1"
                " ORDER BY seq DESC LIMIT 1"), (device, first)).fetchone()
            before = self._conn.execute(self._q(
                "SELECT t FROM events WHERE device=? AND seq > ? AND (flags & 1) = 1"
                " ORDER BY seq LIMIT 1"), (device, last)).fetchone()
        return {"first": first, "last": last, "count": last - first + 1,
                "after": int(after[0]) if after else None,
                "before": int(before[0]) if before else None}

    def device(self, device: str) -> dict[str, Any] | None:
        row = self.row("SELECT device, ack_upto, online, boot, firmware, presence_at, status, status_at"
                       " FROM devices WHERE device=?", (device,))
        if row is None:
            return None
        keys = ["device", "ack_upto", "online", "boot", "firmware", "presence_at", "status",
                "status_at"]
        out = dict(zip(keys, row, strict=True))
        out["online"] = bool(out["online"])
        out["status"] = json.loads(out["status"]) if out["status"] else None
        return out

    def devices(self) -> list[str]:
        with self._lock:
            rows = self._conn.execute("SELECT device FROM devices ORDER BY device").fetchall()
        return [r[0] for r in rows]

    def count(self, device: str | None = None) -> int:
        with self._lock:
            if device is None:
                row = self._conn.execute("SELECT COUNT(*) FROM events").fetchone()
            else:
                row = self._conn.execute(self._q("SELECT COUNT(*) FROM events WHERE device=?"),
                                         (device,)).fetchone()
        return int(row[0])


def rows_from(events: Iterable[tuple[Any, ...]]) -> list[EventRow]:
    return [tuple(e) for e in events]


class Transaction:
    """What code inside `Store.transaction()` may do: write, and read rows it will change."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._store._conn.execute(self._store._q(sql), tuple(params))

    def row(self, sql: str, params: Sequence[Any] = (), for_update: bool = False) -> tuple[Any, ...] | None:
        """One row read inside the transaction. `for_update`: what the caller checks cannot
        change before it writes, even with another process on the same database (SQLite's
        BEGIN IMMEDIATE already holds the write lock; PostgreSQL: FOR UPDATE)."""
        if for_update and self._store._ph != "?":
            sql += " FOR UPDATE"
        found = self._store._conn.execute(self._store._q(sql), tuple(params)).fetchone()
        return tuple(found) if found is not None else None
