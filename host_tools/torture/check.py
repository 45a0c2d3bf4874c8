"""The verdict of a torture run, per door: every event the door recorded (1..its newest sequence
number) is at the platform exactly once and in order, or inside a gap the door reported, and a
reported gap holds only events the door no longer has (docs/torture.md)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from reference_platform.store import Store
from wire.codes import GAP as CODE_GAP


@dataclass
class DoorVerdict:
    device: str
    newest: int  # the door's newest sequence number (from its flash)
    events: int = 0  # stored at the platform
    gap_events: int = 0  # reported lost by the door (overflow), exactly what it no longer holds
    lost: int = 0  # neither stored nor in a reported gap
    duplicated: int = 0  # the same event stored under two sequence numbers
    out_of_order: int = 0  # a stored event older (by boot, or by its number in a boot) than one before it
    problems: list[str] = field(default_factory=list)


def verdict(store: Store, device: str, newest: int, oldest: int,
            numbered: bool = False) -> DoorVerdict:
    """Check `device` against the platform's `store`. `oldest`: the oldest event the door still
    holds (a reported gap must lie below it). `numbered`: the door's events carry their number
    within a boot as data (the small-ring door), so order within a boot is checked too."""
    v = DoorVerdict(device, newest)
    rows: list[tuple[Any, ...]] = store.events(device)
    seqs = [int(r[0]) for r in rows]
    v.events = len(seqs)
    beyond = [s for s in seqs if s > newest or s < 1]
    if beyond:
        v.problems.append(f"{len(beyond)} events at the platform the door never recorded "
                          f"(e.g. seq {beyond[0]})")
    gaps = store.lost(device)
    reported: set[int] = set()
    for g in gaps:
        rng = set(range(int(g["first"]), int(g["last"]) + 1))
        reported |= rng
        if int(g["last"]) >= oldest:
            v.problems.append(f"gap {g['first']}..{g['last']} reported although the door still "
                              f"holds events from {oldest}")
    v.gap_events = len(reported)
    missing = set(range(1, newest + 1)) - set(seqs) - reported
    v.lost = len(missing)
    if missing:
        v.problems.append(f"{len(missing)} events neither stored nor reported lost "
                          f"(first {min(missing)}, last {max(missing)})")
    # Duplicates: the same event (code, boot, time, ms, arg, data) under two numbers. A gap
    # record describes a range and may be sent again after a reboot, so it is left out.
    contents = Counter(tuple(r[1:]) for r in rows if int(r[1]) != CODE_GAP)
    v.duplicated = sum(n - 1 for n in contents.values() if n > 1)
    if v.duplicated:
        v.problems.append(f"{v.duplicated} events stored twice under different numbers")
    last: tuple[int, int] = (-1, -1)
    for r in rows:
        if int(r[1]) == CODE_GAP:
            continue
        boot = int(r[2])
        if numbered and int(r[1]) == 1:
            key = (boot, int.from_bytes(bytes.fromhex(str(r[7]))[:4], "little"))
        else:
            key = (boot, -1)
        if key < last:
            v.out_of_order += 1
        last = max(last, key)
    if v.out_of_order:
        v.problems.append(f"{v.out_of_order} events out of order")
    if store.ack_upto(device) != newest:
        v.problems.append(f"the platform acknowledged up to {store.ack_upto(device)}, "
                          f"the door recorded {newest}")
    return v
