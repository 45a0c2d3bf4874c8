"""The simulated door answers a whitelist transfer as the firmware does: the same bursts of
pieces (some lost, some forged on the way) given to firmware/cache_sync.py's CacheSync and
to host_tools/doorsim.py's SimDoor draw the same states, in the same order, and leave the
same version held; the sim's states are retained, as the firmware's (test_doorsim_wire)."""

from __future__ import annotations

import tempfile
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from firmware.cache_sync import CacheSync
from host_tools.doorsim import SimDoor
from offline_cache.cache import Cache
from tests.host.models.test_cache_sync_transfer import FILE, KEY, PIECES, SITE, C, _snap
from wire import common
from wire.platform import decode_cache_state, encode_cache_chunk

fates = st.dictionaries(st.integers(0, PIECES - 1), st.sampled_from(["lost", "forged"]),
                        max_size=3)
starts = st.integers(0, PIECES - 1)


def _pieces(start: int, faults: dict[int, str], version: int = 2,
            data: bytes = FILE) -> list[bytes]:
    out = []
    for i in range(start, -(-len(data) // C)):
        fate = faults.get(i)
        if fate == "lost":
            continue
        key = b"\x00" * 32 if fate == "forged" else KEY
        out.append(encode_cache_chunk(version, len(data), i * C, data[i * C:(i + 1) * C], key))
    return out


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(starts, fates), min_size=1, max_size=5))
@example([(0, {2: "lost"}), (2, {}), (0, {})])  # resumed from `have`, then the file again: stale
@example([(0, {1: "forged"}), (3, {}), (0, {})])  # a forged next piece stops it; a burst behind
def test_the_simulated_door_answers_every_burst_as_the_firmware_does(
        bursts: list[tuple[int, dict[int, str]]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        cache = Cache(d, KEY, SITE)
        cache.apply_bytes(_snap(1, 3))
        firmware = CacheSync(cache)
        sim = SimDoor("city.d1", [], whitelist=1, cache_key=KEY)
        said: list[bytes] = []
        sim._report = said.append  # type: ignore[method-assign,assignment]
        topic = common.topic("city.d1", "cache")
        for start, faults in bursts:
            for piece in _pieces(start, faults):
                want: list[dict[str, Any]] = []
                if firmware.chunk(piece):
                    want.append(decode_cache_state(firmware.state()))
                said.clear()
                sim._on_message(topic, piece, False)
                assert [decode_cache_state(s) for s in said] == want
        assert sim.whitelist == cache.version
