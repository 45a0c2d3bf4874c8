"""Key rotation progress per site (docs/card-profile.md, "Key versions and rotation"): which
key file generation each door of the site holds (its status report's `key_gen`) and which key
version each registered card is on, as far as the platform knows: moved at the desk
(`doorctl card rekey --db`, recorded here) or re-keyed by a door (an `access_granted` event
with flag 0x08 since the rotation began). No key is read or stored here."""

from __future__ import annotations

import time
from typing import Any

from reference_platform.store import Store
from wire import codes as ev
from wire.common import FLAG_REKEYED

SCHEMA = """CREATE TABLE IF NOT EXISTS card_keys (
    ref TEXT PRIMARY KEY, version INTEGER NOT NULL, source TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL)"""


def _ensure(store: Store) -> None:
    store.ensure_table(SCHEMA)


def record_card(store: Store, ref: str, version: int, source: str = "desk") -> None:
    """A card is known to be on `version` (the desk re-keyed or issued it)."""
    _ensure(store)
    with store.transaction() as tx:
        tx.execute("DELETE FROM card_keys WHERE ref=?", (ref,))
        tx.execute("INSERT INTO card_keys (ref, version, source, at) VALUES (?, ?, ?, ?)",
                   (ref, int(version), source, time.time()))


def progress(store: Store, site: dict[str, Any]) -> dict[str, Any]:
    """{"site", "key_version", "accept", "generation", "doors": {device: key_gen or None},
    "cards": {ref: version or None}} for the doors registered at this site and the cards
    the platform registered (None: not known to have moved)."""
    _ensure(store)
    site_id = int(site["site_id"])
    current = int(site.get("key_version", 1))
    since = float(site.get("rotated_at", 0))
    doors: dict[str, int | None] = {}
    for device in store.devices():
        reg = store.registration(device)
        if reg is None or int(reg["site"]) != site_id:
            continue
        status = (store.device(device) or {}).get("status") or {}
        gen = status.get("key_gen")
        doors[device] = gen if isinstance(gen, int) else None
    try:
        refs = [r[0] for r in store.rows("SELECT ref FROM cards WHERE replaced_by IS NULL ORDER BY ref")]
    except Exception:  # no card registry in this database yet
        refs = []
    known = {r[0]: int(r[1]) for r in store.rows("SELECT ref, version FROM card_keys")}
    rekeyed: set[str] = set()
    for data, flags in store.rows("SELECT data, flags FROM events WHERE code=? AND t>=?",
                             (ev.ACCESS_GRANTED, int(since))):
        if int(flags) & FLAG_REKEYED:
            rekeyed.add(str(data)[:16])
    cards: dict[str, int | None] = {}
    for ref in refs:
        v = known.get(ref)
        if ref in rekeyed and (v is None or v < current):
            v = current
        cards[ref] = v
    return {"site": site_id, "key_version": current, "accept": list(site.get("accept", [current])),
            "generation": int(site.get("generation", 1)), "doors": doors, "cards": cards}


def summary(p: dict[str, Any]) -> list[str]:
    """The report as lines: doors per key file generation, cards per key version."""
    gen = p["generation"]
    doors = p["doors"]
    cards = p["cards"]
    by_gen: dict[str, int] = {}
    for g in doors.values():
        k = "unknown" if g is None else str(g)
        by_gen[k] = by_gen.get(k, 0) + 1
    by_ver: dict[str, int] = {}
    for v in cards.values():
        k = "not yet moved" if v is None or v < p["key_version"] else f"version {v}"
        by_ver[k] = by_ver.get(k, 0) + 1
    lines = [f"site {p['site']}: key version {p['key_version']} current, doors accept "
             f"{' and '.join(map(str, p['accept']))}, key file generation {gen}",
             f"doors: {sum(1 for g in doors.values() if g == gen)} of {len(doors)} on generation {gen}"
             + "".join(f"; {n} on {k}" for k, n in sorted(by_gen.items()) if k != str(gen))]
    behind = sorted(d for d, g in doors.items() if g != gen)
    if behind:
        lines.append("doors behind: " + ", ".join(behind))
    cur = "version %d" % p["key_version"]
    lines.append(f"cards: {by_ver.get(cur, 0)} of {len(cards)} on {cur}"
                 + "".join(f"; {n} {k}" for k, n in sorted(by_ver.items()) if k != cur))
    return lines
