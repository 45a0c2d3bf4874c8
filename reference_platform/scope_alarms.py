"""Doors whose registration claims other keys than the site file records for them
(`key_scope_mismatch` in `doorctl platform alarms`): a forged registration on the broker, or
a door commissioned with a key file the site file does not know. The platform signs by the
record all the same (reference_platform/door_signing.py). No key is read or stored here."""

from __future__ import annotations

import time
from typing import Any

from reference_platform.store import Store

SCHEMA = """CREATE TABLE IF NOT EXISTS key_scope_disputes (
    device TEXT PRIMARY KEY, claim TEXT NOT NULL, record TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL)"""


def _ensure(store: Store) -> None:
    store.ensure_table(SCHEMA)


def record(store: Store, device: str, claim: str | None, recorded: str) -> None:
    """The door's latest registration claims `claim` and the site file says `recorded`
    (claim None: they agree, the alarm ends)."""
    _ensure(store)
    with store.transaction() as tx:
        tx.execute("DELETE FROM key_scope_disputes WHERE device=?", (device,))
        if claim is not None:
            tx.execute("INSERT INTO key_scope_disputes (device, claim, record, at) "
                       "VALUES (?, ?, ?, ?)", (device, claim, recorded, time.time()))


def disputes(store: Store) -> dict[str, dict[str, Any]]:
    """{device: {"claim", "record", "at"}} of the doors in dispute now."""
    _ensure(store)
    rows = store.rows("SELECT device, claim, record, at FROM key_scope_disputes")
    return {r[0]: {"claim": r[1], "record": r[2], "at": r[3]} for r in rows}
