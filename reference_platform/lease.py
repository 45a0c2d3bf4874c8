"""One platform instance at a time for singleton work, through the shared database.

Several instances may ingest from one database (the shared subscription spreads the doors'
batches), but some work must be done once: the time message a door gets when it comes online,
and the whitelist catch-up of a door that reports an older version. The instance that holds
the lease does it; the others only ingest. If the holder dies, another takes over once the
lease has expired.

`TableLease` keeps the lease in the `leases` table (any database the store speaks: SQLite
now, PostgreSQL too): holder and expiry, taken or renewed in one transaction. The holder
counts itself the holder only for two thirds of the term, so two hosts whose clocks differ by
less than a third of it never both act. `AdvisoryLease` is the PostgreSQL form: a session
advisory lock, held as long as its connection lives (no expiry to wait for after a crash).
`lease_for(store, ...)` picks the one for the store's database.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from reference_platform.store import Store


class Lease(Protocol):
    def acquire(self) -> bool:
        """Take or renew the lease; True when this instance holds it now."""

    def held(self) -> bool:
        """True while this instance may do singleton work."""

    def release(self) -> None:
        """Give the lease up (at a clean stop), so another takes it over at once."""


class TableLease:
    def __init__(self, store: Store, name: str, holder: str, term_s: float = 15.0) -> None:
        self.store = store
        self.name = name
        self.holder = holder
        self.term_s = term_s
        self._until = 0.0  # monotonic time up to which this instance counts as the holder

    def acquire(self) -> bool:
        now, mono = time.time(), time.monotonic()
        got = self.store.take_lease(self.name, self.holder, now, now + self.term_s)
        self._until = mono + self.term_s * 2 / 3 if got else 0.0
        return got

    def held(self) -> bool:
        return time.monotonic() < self._until

    def release(self) -> None:
        self._until = 0.0
        self.store.drop_lease(self.name, self.holder)


class AdvisoryLease:
    """A PostgreSQL session advisory lock on its own connection (`pg_try_advisory_lock`)."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self._conn: Any = None
        self._held = False

    def acquire(self) -> bool:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._held = False
                self._conn = psycopg.connect(self.url, autocommit=True)
            if self._held:
                self._conn.execute("SELECT 1")  # the session (and so the lock) is still there
            else:
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                self._held = bool(row[0])
        except psycopg.Error:
            self._held = False
            self._conn = None
        return self._held

    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        if self._conn is not None:
            try:
                if self._held:
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing: the session ends and frees it anyway
                pass
        self._conn = None
        self._held = False


def lease_for(store: Store, name: str, holder: str, term_s: float = 15.0) -> Lease:
    """The database's own kind of lease: an advisory lock on PostgreSQL, the table elsewhere."""
    if store.url.startswith(("postgresql://", "postgres://")):
        return AdvisoryLease(store.url, name)
    return TableLease(store, name, holder, term_s)


class LeaseKeeper:
    """Renews a lease in the background (every third of its term) until stopped."""

    def __init__(self, lease: Lease, every_s: float) -> None:
        self.lease = lease
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def start(self) -> LeaseKeeper:
        self._try(self.lease.acquire)
        self._thread.start()
        return self

    @staticmethod
    def _try(step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:  # noqa: BLE001 - a locked or closed database: not held; try again later
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._try(self.lease.acquire)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._try(self.lease.release)  # if it cannot be given up, it expires
