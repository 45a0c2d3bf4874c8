"""The door's whitelist transfer (firmware/cache_sync.py) against the platform's resume rule
(reference_platform/distribute.py `push`), over any pattern of pieces lost or forged on the
way: a burst is answered at most once per run of missing pieces (and once where it starts
behind the door), besides the install (the answers go out past the uplink's in-flight limit,
docs/protocol.md), a forged piece where the door expects the next one is answered, and the
platform, resuming from each answer, gets the file installed once a burst comes through
whole."""

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


def _first_fault(start: int, faults: dict[int, str]) -> str | None:
    """The fate of the first piece from `start` that does not reach the door whole."""
    return next((faults[i] for i in range(start // C, PIECES) if i in faults), None)


def _fault_runs(start: int, faults: dict[int, str]) -> int:
    """Runs of consecutive pieces lost or forged in the burst from `start`."""
    idx = range(start // C, PIECES)
    return sum(1 for i in idx if i in faults and (i == idx.start or i - 1 not in faults))


@settings(max_examples=60, deadline=None)
@given(st.lists(fates, max_size=5))
@example([{5: "lost"}, {0: "lost"}])  # the piece waited for, after an answered one, in one burst
@example([{1: "lost"}, {3: "lost", 0: "lost", 5: "lost"}, {3: "lost", 4: "lost"}])  # not answered
def test_each_burst_is_answered_at_most_once_and_the_transfer_completes(
        bursts: list[dict[int, str]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        cache = Cache(d, KEY, SITE)
        cache.apply_bytes(_snap(1, 3))
        sync = CacheSync(cache)
        start = 0
        for faults in [*bursts, {}, {}]:
            answers = _burst(sync, start, faults)
            # Never one answer per piece dropped (they go out past the in-flight limit): at most
            # one per run of missing pieces, one more where the burst starts behind the door
            # (sent again from the start after a timeout, or from an answer the door overtook
            # later in the same burst), and the install's answer last.
            installed = [a for a in answers if a["version"] == 2 and not a["receiving"]]
            assert len(answers) - len(installed) <= _fault_runs(start, faults) + 1, answers
            assert len(installed) <= 1 and (not installed or answers[-1] is installed[0]), answers
            if cache.version == 2:
                assert answers and answers[-1]["version"] == 2  # the install is answered
                break
            # A forged piece where the door expects the next one is always answered (the
            # transfer is refused). A lost one is answered by the first genuine piece after it,
            # unless that piece lies beyond the last one answered: the door cannot tell a burst
            # whose first pieces were lost from the tail of the burst it answered, and the
            # platform's timeout sends the file again.
            if _first_fault(start, faults) == "forged":
                assert answers, faults
            # The platform's rule: from `have` when the door holds part of this file, else
            # from the start (a refusal is sent again whole; no answer: it times out, sends again).
            state = answers[-1] if answers else None
            start = int(state["have"]) if state and state["receiving"] == 2 else 0
        assert cache.version == 2
        cache.close()


starvation = st.dictionaries(st.integers(0, PIECES), st.just("starved"), max_size=2)


@settings(max_examples=60, deadline=None)
@given(st.lists(starvation, min_size=1, max_size=4))
@example([{PIECES - 1: "starved"}])  # the last piece: nothing after it would have answered
@example([{PIECES: "starved"}, {PIECES: "starved"}])  # the install, twice over
def test_a_piece_or_install_that_finds_no_heap_is_always_answered_and_the_transfer_completes(
        bursts: list[dict[int, str]]) -> None:
    """Fates by piece index; index PIECES is the install. A burst that met a MemoryError is
    never left without an answer (the platform sends nothing more until one comes), is not
    answered more than once for it, and resuming by the platform's rule installs the file."""
    import asyncio

    import firmware.cache_sync as cs

    with tempfile.TemporaryDirectory() as d:
        cache = Cache(d, KEY, SITE)
        cache.apply_bytes(_snap(1, 3))
        sync = CacheSync(cache)
        answers: list[dict[str, Any]] = []

        async def publish(leaf: str, payload: bytes, retain: bool) -> bool:
            answers.append(decode_cache_state(payload))
            return True

        sync.publish = publish
        real_tag, real_apply = cs.cache_chunk_tag, cache.apply
        now: dict[str, Any] = {"piece": -1, "faults": {}}

        def tag(*args: Any) -> bytes:
            if now["faults"].get(now["piece"]) == "starved":
                raise MemoryError("memory allocation failed, allocating 96 bytes")
            return real_tag(*args)

        def apply(path: str, tick: Any = None) -> int:
            if now["faults"].get(PIECES) == "starved":
                raise MemoryError("memory allocation failed, allocating 252 bytes")
            return real_apply(path, tick)

        cs.cache_chunk_tag, cache.apply = tag, apply  # type: ignore[method-assign]
        try:
            start = 0
            for faults in [*bursts, {}]:
                answers.clear()
                now["faults"] = faults
                starved = False
                for i in range(start // C, PIECES):
                    now["piece"] = i
                    piece = encode_cache_chunk(2, len(FILE), i * C, FILE[i * C:(i + 1) * C], KEY)
                    try:
                        asyncio.run(sync.on_message(piece))
                    except MemoryError:
                        starved = True
                if starved:
                    assert answers, faults  # never silent: the platform would wait for ever
                    assert len(answers) == 1, answers  # once for the piece lost, the rest dropped
                if cache.version == 2:
                    assert answers[-1]["version"] == 2 and not answers[-1]["receiving"]
                    break
                state = answers[-1] if answers else None
                start = int(state["have"]) if state and state["receiving"] == 2 else 0
        finally:
            cs.cache_chunk_tag = real_tag
        assert cache.version == 2
        cache.close()
