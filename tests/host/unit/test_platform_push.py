"""A whitelist transfer to one door (reference_platform/distribute.py push): it resumes from
what the door says it holds, and gives up as "incomplete" only after rounds that moved the
door no further. A door short of heap drops a piece now and then (refused no_memory); each
round then gets it further, and it must not be given up on."""

from __future__ import annotations

from typing import Any

import pytest

from host_tools.cards.kit import SiteKit
from reference_platform.distribute import DistributionError, push
from wire import common


class Door:
    """A platform's view of one door that takes pieces in order, drops the ones `drop` says
    (by their offset, at each sending), and answers the state after every round."""

    def __init__(self, data: bytes, version: int, drop: Any) -> None:
        self.data = data
        self.version = version
        self.drop = drop
        self.have = 0
        self.installed = 0
        self.rounds = 0
        self.cache_states: dict[str, dict[str, Any]] = {}
        self.registry = None

    def publish(self, device: str, leaf: str, payload: bytes, retain: bool = False) -> None:
        raise AssertionError("pieces go through send(), replaced by the test")

    def whitelist_for(self, device: str, data: bytes, key: bytes | None = None
                      ) -> tuple[bytes, bytes | None]:
        return data, key

    def _round(self, start: int) -> None:
        self.rounds += 1
        for offset in range(start, len(self.data), common.CACHE_CHUNK):
            if offset != self.have or self.drop(self.rounds, offset):
                break  # out of order from here: the door answers what it has
            self.have = offset + min(common.CACHE_CHUNK, len(self.data) - offset)
        if self.have == len(self.data):
            self.installed = self.version

    def wait_cache_state(self, device: str, cond: Any, timeout: float = 30.0
                         ) -> dict[str, Any] | None:
        return {"version": self.installed, "receiving": self.version, "have": self.have,
                "reason": ""}

    def wait_cache_states(self, devices: Any, cond: Any, timeout: float,
                          then: Any = None) -> dict[str, dict[str, Any]]:
        raise AssertionError("not a fan-out")


def _file() -> bytes:
    site = SiteKit()
    cards = [(k.to_bytes(8, "big"), 1, False) for k in range(4000)]
    data = site.snapshot(7, cards)
    assert len(data) > 10 * common.CACHE_CHUNK
    return data


def _push(door: Door, data: bytes, monkeypatch: pytest.MonkeyPatch, retries: int = 3,
          waits: list[float] | None = None) -> dict[str, Any]:
    """push() with each round's pieces handed to `door` as its connection would, and its
    pauses between rounds noted in `waits` instead of slept."""
    import reference_platform.distribute as distribute

    def send(platform: Any, device: str, d: bytes, start: int = 0, key: Any = None,
             pieces: Any = None) -> None:
        door._round(start)

    monkeypatch.setattr(distribute, "send", send)
    monkeypatch.setattr(distribute.time, "sleep", (waits if waits is not None else []).append)
    return push(door, "d1", data, timeout=30, retries=retries, key=b"k" * 16)


def test_a_door_that_drops_a_piece_every_round_but_gets_further_is_served_to_the_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = _file()
    door = Door(data, 7, lambda rnd, offset: offset == rnd * common.CACHE_CHUNK)
    state = _push(door, data, monkeypatch)
    assert state["version"] == 7
    assert door.rounds > 4  # more rounds than `retries` allows in a row without progress


def test_a_door_that_gets_no_further_is_given_up_after_retries_rounds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = _file()
    door = Door(data, 7, lambda rnd, offset: offset == 3 * common.CACHE_CHUNK)
    with pytest.raises(DistributionError, match="incomplete"):
        _push(door, data, monkeypatch, retries=3)
    assert door.rounds == 5  # the round that got it to piece 3, then 4 that moved it no further
    assert door.have == 3 * common.CACHE_CHUNK


def test_rounds_that_move_the_door_no_further_are_spaced_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A door short of heap for a moment refuses the same piece again if the next round comes
    at once: the rounds after one without progress wait 0.5, 1, 2 s (within the timeout)."""
    waits: list[float] = []
    data = _file()
    door = Door(data, 7, lambda rnd, offset: offset == 3 * common.CACHE_CHUNK)
    with pytest.raises(DistributionError, match="incomplete"):
        _push(door, data, monkeypatch, retries=3, waits=waits)
    assert waits == [0.5, 1.0, 2.0]  # none after a round that moved it, none after the last
