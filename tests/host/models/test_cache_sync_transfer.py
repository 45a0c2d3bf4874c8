"""The door's whitelist transfer (firmware/cache_sync.py) against the platform's resume rule
(reference_platform/distribute.py `push`), over any pattern of pieces lost or forged on the
way: each burst is answered with the state at most once, besides the install (the answers go
out past the uplink's in-flight limit, docs/protocol.md), a burst the door could not take and
that brought it anything after the fault is answered, and the platform, resuming from each
answer, gets the file installed once a burst comes through whole."""

from __future__ import annotations

import tempfile
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from firmware.cache_sync import CacheSync
from host_tools import cache_build
from offline_cache import fmt
from offline_cache.cache import Cache
from wire import common
from wire.platform import decode_cache_state, encode_cache_chunk

KEY = b"k" * 32
SITE = 7
C = common.CACHE_CHUNK


def _snap(version: int, n: int) -> bytes:
    recs = [cache_build.pack_record(i.to_bytes(8, "big"), fmt.ACTIVE, False, 0, 1, 65535, 1)
            for i in range(n)]
    return cache_build.build(KEY, fmt.KIND_SNAPSHOT, version, 0, SITE, 0xFFFF, 0, recs, {}, [])


FILE = _snap(2, 700)  # 10.5 KB: six pieces
PIECES = -(-len(FILE) // C)
fates = st.dictionaries(st.integers(0, PIECES - 1), st.sampled_from(["lost", "forged"]),
                        max_size=3)


def _burst(sync: CacheSync, start: int, faults: dict[int, str]) -> list[dict[str, Any]]:
    """The pieces from `start`, as the platform sends them; the states the door answers."""
    answers = []
    for i in range(start // C, PIECES):
        fate = faults.get(i)
        if fate == "lost":
            continue
        key = b"\x00" * 32 if fate == "forged" else KEY
        piece = encode_cache_chunk(2, len(FILE), i * C, FILE[i * C:(i + 1) * C], key)
        if sync.chunk(piece):
            answers.append(decode_cache_state(sync.state()))
    return answers


def _expects_answer(start: int, faults: dict[int, str]) -> bool:
    """Whether a burst the door cannot complete brings it something to answer: a forged piece
    where it expects the next one, or a genuine piece after the first one lost."""
    first = start // C
    for i in range(first, PIECES):
        fate = faults.get(i)
        if fate == "forged":
            return True
        if fate == "lost":
            return any(faults.get(j) is None for j in range(i + 1, PIECES))
    return False


@settings(max_examples=60, deadline=None)
@given(st.lists(fates, max_size=5))
@example([{5: "lost"}, {0: "lost"}])  # the piece waited for, after an answered one, in one burst
def test_each_burst_is_answered_at_most_once_and_the_transfer_completes(
        bursts: list[dict[int, str]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        cache = Cache(d, KEY, SITE)
        cache.apply_bytes(_snap(1, 3))
        sync = CacheSync(cache)
        start = 0
        for faults in [*bursts, {}, {}]:
            answers = _burst(sync, start, faults)
            # One state answer a burst, and the install's: a burst sent again from the start
            # can bring the one piece the door was waiting for after one it answered.
            installed = [a for a in answers if a["version"] == 2 and not a["receiving"]]
            assert len(answers) - len(installed) <= 1 and len(installed) <= 1, answers
            assert not installed or answers[-1] is installed[0], answers
            if cache.version == 2:
                assert answers and answers[-1]["version"] == 2  # the install is answered
                break
            expected = any(faults.get(i) for i in range(start // C, PIECES))
            if expected:
                assert bool(answers) == _expects_answer(start, faults)
            # The platform's rule: from `have` when the door holds part of this file, else
            # from the start (a refusal is sent again whole; no answer: it times out, sends again).
            state = answers[-1] if answers else None
            start = int(state["have"]) if state and state["receiving"] == 2 else 0
        assert cache.version == 2
        cache.close()
