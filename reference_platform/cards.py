"""Card lifecycle at the platform and the whitelist it makes (docs/platform.md).

Residents (names, rooms) live only here; doors get pseudonymous card references with status,
validity, door mask and class. Every operation is one new whitelist version; a door that
holds version N gets one signed delta from N to the latest (all changes at once, so a
revocation never lags a grant), or the whole snapshot when it is too far behind or lost its
place. Python API:

    reg = CardRegistry(Store("platform.db"), site_keys)
    reg.issue(ref, resident="r-301-1", room="301", doors=[0, 1], valid_from=date, valid_to=date)
    reg.report_lost(ref); reg.unblock(ref); reg.cancel(ref); reg.suspend(ref); reg.resume(ref)
    reg.renew(ref, valid_to=date); reg.reissue(old_ref, new_ref)
    reg.update_for(applied_version) -> signed bytes to send (delta or snapshot)
    reg.content_hash() -> what a door holding the latest version must report
    reg.resync() -> a new version with the same cards (for a door whose content differs)
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from host_tools import cache_build
from offline_cache import content, fmt
from reference_platform.store import Store, Transaction
from wire.common import SITE_TZ_MIN

EPOCH = dt.date(1970, 1, 1)
TZ_MIN = SITE_TZ_MIN
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS residents (
        resident TEXT PRIMARY KEY, name TEXT, room TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS cards (
        ref TEXT PRIMARY KEY, resident TEXT NOT NULL, status INTEGER NOT NULL,
        valid_from INTEGER NOT NULL, valid_to INTEGER NOT NULL, doors INTEGER NOT NULL,
        master INTEGER NOT NULL, changed_in INTEGER NOT NULL, replaced_by TEXT)""",
    """CREATE TABLE IF NOT EXISTS whitelist_versions (
        version INTEGER PRIMARY KEY, op TEXT NOT NULL, ref TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)""",
    # A landlord's hold (suspend .. resume): it outlives a loss report and a reissue, so only
    # `resume` gives the access back.
    """CREATE TABLE IF NOT EXISTS holds (ref TEXT PRIMARY KEY)""",
]
REVOKING = {"lost": fmt.LOST, "cancel": fmt.CANCELLED, "suspend": fmt.SUSPENDED}


class CardError(ValueError):
    """An operation that does not apply (unknown card, wrong state, bad value)."""


def day(d: dt.date) -> int:
    return (d - EPOCH).days


def _ref(ref: str) -> str:
    r = ref.strip().lower()
    if len(r) != 2 * fmt.REF_LEN or any(c not in "0123456789abcdef" for c in r):
        raise CardError(f"card reference {ref!r} must be {2 * fmt.REF_LEN} hex digits")
    return r


class CardRegistry:
    def __init__(self, store: Store, site_keys: dict[str, Any]) -> None:
        self.store = store
        self.site_id = int(site_keys["site_id"])
        self.site = site_keys  # a per-door site signs each door's copy (platform/door_signing.py)
        self.key = bytes.fromhex(site_keys["keys"]["cache"])
        self._content: tuple[int, str] | None = None  # (version, its content hash)
        with store.transaction() as tx:
            for stmt in SCHEMA:
                tx.execute(stmt)
            # A registry from before holds were kept: its suspended cards are held.
            tx.execute("INSERT INTO holds (ref) SELECT ref FROM cards WHERE status = ? "
                       "AND ref NOT IN (SELECT ref FROM holds)", (fmt.SUSPENDED,))

    # -- queries ----------------------------------------------------------------------------

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.store.rows(sql, params)

    def version(self) -> int:
        row = self._all("SELECT MAX(version) FROM whitelist_versions")
        return int(row[0][0] or 0)

    def card(self, ref: str) -> dict[str, Any] | None:
        rows = self._all("SELECT c.ref, c.resident, c.status, c.valid_from, c.valid_to, c.doors, "
                         "c.master, c.changed_in, c.replaced_by, r.room FROM cards c JOIN residents r "
                         "ON r.resident = c.resident WHERE c.ref=?", (_ref(ref),))
        if not rows:
            return None
        keys = ["ref", "resident", "status", "valid_from", "valid_to", "doors", "master",
                "changed_in", "replaced_by", "room"]
        out = dict(zip(keys, rows[0], strict=True))
        out["status"] = fmt.STATUS_NAMES[out["status"]]
        return out

    def cards(self) -> list[dict[str, Any]]:
        return [c for r in self._all("SELECT ref FROM cards ORDER BY ref")
                if (c := self.card(r[0])) is not None]

    # -- operations -----------------------------------------------------------------------

    @staticmethod
    def _bump(tx: Transaction, op: str, ref: str) -> int:
        """A new version, inside the operation's transaction."""
        row = tx.row("SELECT MAX(version) FROM whitelist_versions")
        v = int((row[0] if row else 0) or 0) + 1
        tx.execute("INSERT INTO whitelist_versions (version, op, ref, at) VALUES (?, ?, ?, ?)",
                   (v, op, ref, time.time()))
        return v

    def issue(self, ref: str, resident: str, room: str, doors: list[int], valid_from: dt.date,
              valid_to: dt.date, master: bool = False, name: str | None = None) -> int:
        """Bind a personalized card to a resident and a room's doors for a period."""
        ref = _ref(ref)
        if not doors or any(not 0 <= d <= 15 for d in doors):
            raise CardError("doors must be door numbers 0-15")
        if valid_to < valid_from:
            raise CardError("the validity ends before it starts")
        if self.card(ref) is not None:
            raise CardError(f"card {ref} is already issued: reissue or unblock it")
        mask = 0
        for d in doors:
            mask |= 1 << d
        with self.store.transaction() as tx:
            tx.execute("INSERT INTO residents (resident, name, room) VALUES (?, ?, ?) "
                       "ON CONFLICT (resident) DO UPDATE SET room = excluded.room",
                       (resident, name, room))
            v = self._bump(tx, "issue", ref)
            tx.execute("INSERT INTO cards (ref, resident, status, valid_from, valid_to, doors, "
                       "master, changed_in) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (ref, resident, fmt.ACTIVE, day(valid_from), day(valid_to), mask,
                        int(master), v))
        return v

    @staticmethod
    def _held(tx: Transaction, ref: str) -> bool:
        return tx.row("SELECT ref FROM holds WHERE ref = ?", (ref,), for_update=True) is not None

    def _set(self, op: str, ref: str, allowed_from: tuple[str, ...], hold: bool | None = None,
             **changes: Any) -> int:
        """One operation on one card: its state checked and changed in one transaction, one
        new version. `hold`: True places the landlord's hold, False lifts it."""
        ref = _ref(ref)
        with self.store.transaction() as tx:
            # Read for update: what the operation checks cannot change before it writes, even
            # with two operators' processes on one database.
            row = tx.row("SELECT status FROM cards WHERE ref = ?", (ref,), for_update=True)
            if row is None:
                raise CardError(f"card {ref} is not issued")
            status = fmt.STATUS_NAMES[row[0]]
            if status not in allowed_from:
                raise CardError(f"card {ref} is {status}: cannot {op} it")
            if op == "unblock" and self._held(tx, ref):
                changes["status"] = fmt.SUSPENDED  # found again, still on hold
            v = self._bump(tx, op, ref)
            sets = ", ".join(f"{k} = ?" for k in changes)
            tx.execute(f"UPDATE cards SET {sets}, changed_in = ? WHERE ref = ?",
                       (*changes.values(), v, ref))
            if hold is True and not self._held(tx, ref):
                tx.execute("INSERT INTO holds (ref) VALUES (?)", (ref,))
            elif hold is False:
                tx.execute("DELETE FROM holds WHERE ref = ?", (ref,))
        return v

    def report_lost(self, ref: str) -> int:
        return self._set("lost", ref, ("active", "suspended"), status=fmt.LOST)

    def unblock(self, ref: str) -> int:
        """Lost card found: active again, or suspended when the landlord's hold is on."""
        return self._set("unblock", ref, ("lost",), status=fmt.ACTIVE)

    def cancel(self, ref: str) -> int:
        return self._set("cancel", ref, ("active", "lost", "suspended"), status=fmt.CANCELLED)

    def suspend(self, ref: str) -> int:
        return self._set("suspend", ref, ("active",), hold=True, status=fmt.SUSPENDED)

    def resume(self, ref: str) -> int:
        return self._set("resume", ref, ("suspended",), hold=False, status=fmt.ACTIVE)

    def renew(self, ref: str, valid_to: dt.date) -> int:
        card = self.card(ref)
        if card is not None and day(valid_to) <= card["valid_to"]:
            raise CardError("a renewal must extend the validity")
        return self._set("renew", ref, ("active", "suspended"), valid_to=day(valid_to))

    def reissue(self, old: str, new: str) -> int:
        """A new card for the same resident, doors and validity, and the old one cancelled, in
        one update (one version: the door never holds both, nor neither). A landlord's hold
        passes to the new card."""
        old, new = _ref(old), _ref(new)
        if self.card(new) is not None:
            raise CardError(f"card {new} is already issued: reissue or unblock it")
        with self.store.transaction() as tx:
            row = tx.row("SELECT status, resident, valid_from, valid_to, doors, master "
                         "FROM cards WHERE ref = ?", (old,), for_update=True)
            if row is None:
                raise CardError(f"card {old} is not issued")
            status = fmt.STATUS_NAMES[row[0]]
            if status not in ("active", "lost", "suspended"):
                raise CardError(f"card {old} is {status}: cannot reissue it")
            held = self._held(tx, old)
            v = self._bump(tx, "reissue", new)
            tx.execute("UPDATE cards SET status = ?, replaced_by = ?, changed_in = ? WHERE ref = ?",
                       (fmt.CANCELLED, new, v, old))
            tx.execute("INSERT INTO cards (ref, resident, status, valid_from, valid_to, doors, "
                       "master, changed_in) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (new, row[1], fmt.SUSPENDED if held else fmt.ACTIVE, row[2], row[3],
                        row[4], row[5], v))
            if held:
                tx.execute("INSERT INTO holds (ref) VALUES (?)", (new,))
        return v

    # -- whitelist files --------------------------------------------------------------------

    def _records(self, since: int = 0) -> list[bytes]:
        rows = self._all("SELECT ref, status, valid_from, valid_to, doors, master FROM cards "
                         "WHERE changed_in > ?", (since,))
        return [cache_build.pack_record(bytes.fromhex(r[0]), r[1], bool(r[5]), 0, r[2],
                                min(r[3], fmt.NO_END - 1), r[4]) for r in rows]

    def snapshot(self) -> bytes:
        return cache_build.build(self.key, fmt.KIND_SNAPSHOT, self.version(), 0, self.site_id, 0xFFFF,
                         TZ_MIN, self._records(), {}, [], int(time.time()))

    def content_hash(self) -> str:
        """The content hash (offline_cache/content.py) of the latest version's cards: what a
        door that holds that version reports when it holds the platform's whitelist."""
        v = self.version()
        if self._content is None or self._content[0] != v:
            self._content = (v, content.of_snapshot(self.snapshot()))
        return self._content[1]

    def resync(self) -> int:
        """A new version with the same cards: a door that holds the latest version number
        with other cards (an installer's file, another platform's) refuses a snapshot of a
        version it already holds, and takes this one. Other doors get an empty delta."""
        with self.store.transaction() as tx:
            return self._bump(tx, "resync", "")

    def update_for(self, applied: int) -> bytes | None:
        """What a door holding `applied` needs: None when current, a delta of every change
        since, or a snapshot when it holds nothing this registry made."""
        v = self.version()
        if applied == v:
            return None
        if applied <= 0 or applied > v:
            return self.snapshot()
        return cache_build.build(self.key, fmt.KIND_DELTA, v, applied, self.site_id, 0xFFFF, TZ_MIN,
                         self._records(applied), {}, [], int(time.time()))


def known_card(store: Store, ref: str) -> bool:
    """The platform issued the card or stored an event naming it."""
    r = _ref(ref)
    if store.row("SELECT 1 FROM events WHERE substr(data, 1, 16) = ? LIMIT 1", (r,)) is not None:
        return True
    try:
        return store.row("SELECT 1 FROM cards WHERE ref = ?", (r,)) is not None
    except Exception:  # noqa: BLE001 - no card registry in this database (either driver's error)
        return False


def residence_report(store: Store, ref: str, start: dt.date, end: dt.date,
                     tz_min: int = TZ_MIN) -> dict[str, int]:
    """Days with at least one entry per month (YYYY-MM -> days), from stored events only."""
    ref = _ref(ref)
    rows = store.rows("SELECT t FROM events WHERE code = 1 AND arg = 1 AND substr(data, 1, 16) = ? "
                      "AND (flags & 1) = 1", (ref,))
    days: dict[str, set[dt.date]] = {}
    for (t,) in rows:
        d = (dt.datetime.fromtimestamp(t, dt.UTC) + dt.timedelta(minutes=tz_min)).date()
        if start <= d <= end:
            days.setdefault(d.strftime("%Y-%m"), set()).add(d)
    out = {}
    m = dt.date(start.year, start.month, 1)
    while m <= end:
        key = m.strftime("%Y-%m")
        out[key] = len(days.get(key, ()))
        m = dt.date(m.year + (m.month == 12), m.month % 12 + 1, 1)
    return out


def incomplete_months(store: Store, start: dt.date, end: dt.date,
                      tz_min: int = TZ_MIN) -> list[str]:
    """Months of start..end (YYYY-MM) in which some door lost events (a reported gap,
    docs/protocol.md "Resend requests"): a day without an entry there may be a day whose entry
    is lost. A loss with no stored event before (after) it reaches back to `start` (forward to
    now). Which doors is not said: the report shows no doors."""
    lo = dt.datetime.combine(start, dt.time(), dt.UTC) - dt.timedelta(minutes=tz_min)
    first_day = lo.timestamp()
    out: set[str] = set()
    for device in store.devices():
        for gap in store.lost(device):
            a = gap["after"] if gap["after"] is not None else first_day
            b = gap["before"] if gap["before"] is not None else time.time()
            d = (dt.datetime.fromtimestamp(a, dt.UTC) + dt.timedelta(minutes=tz_min)).date()
            last = (dt.datetime.fromtimestamp(b, dt.UTC) + dt.timedelta(minutes=tz_min)).date()
            m = dt.date(max(d, start).year, max(d, start).month, 1)
            while m <= min(last, end):
                out.add(m.strftime("%Y-%m"))
                m = dt.date(m.year + (m.month == 12), m.month % 12 + 1, 1)
    return sorted(out)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
