"""A short soak of the firmware image (32-bit unix build, `doorctl build unix32`) in a tight
heap: decisions, whitelist deltas, broker outages and power cuts, round after round; every
event reaches the platform exactly once and nothing runs out of memory (not even a
MemoryError the door recovers from). The full soak is
`doorctl bench image.soak` (host_tools/benchmarks/soak.py); the heap figures under the full
workload are `doorctl bench image.heap` (host_tools/benchmarks/image.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from host_tools.benchmarks.soak import soak
from host_tools.image.source import vendored_tarball
from wire import codes as ev

pytestmark = pytest.mark.skipif(not (os.environ.get("MICROPY_SRC") or vendored_tarball()),
                                reason="no MicroPython v1.28.0 source here")
HEAP = "96K"  # the full workload's smallest heap is image.heap_min_kib; this soak's is smaller


def test_short_soak_on_the_image(tmp_path: Path, unix32_binary: Path) -> None:
    r = soak(tmp_path, str(unix32_binary), HEAP, decisions=24, updates=3, reconnects=3, cuts=3,
             minutes=10, cards=2000)
    assert (r.decisions, r.updates, r.reconnects, r.cuts) == (24, 3, 3, 3)
    assert r.duplicated == 0, "an event reached the platform twice"
    assert r.lost == 0 and r.seqs and max(r.seqs) >= r.last_seq, "an event is missing"
    # a read cut short (card_lost, a reader answer late on a loaded host) is a refusal more,
    # no decision: the card was read again
    assert r.counts(ev.ACCESS_GRANTED) == 12 and r.counts(ev.ACCESS_DENIED) - r.cut_short == 12
    assert r.checked == 24, "not every decision was checked at the platform one by one"
    assert r.counts(ev.BOOT) >= 3
    assert r.alive and not r.out_of_memory
    assert r.oom_recovered == 0, f"MemoryErrors recovered from: {r.recovered}"
    assert r.min_free is not None and r.min_free > 0
