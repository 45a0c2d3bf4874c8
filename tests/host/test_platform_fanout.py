"""A whitelist fan-out waits for thousands of doors at once (Platform.wait_cache_states): a
door's answer counts when it arrives, one that answered before the wait counts too, one whose
state does not meet the condition yet is still awaited, and at the timeout the caller gets
the doors that did answer."""

from __future__ import annotations

import threading
from pathlib import Path

from firmware import protocol
from host_tools.platform.ingest import Platform
from host_tools.platform.store import Store


def answer(p: Platform, device: str, version: int) -> None:
    p._handle(protocol.topic(device, "cache_state"), protocol.encode_cache_state(version))


def test_answers_are_taken_as_they_arrive_and_the_timeout_keeps_them(tmp_path: Path) -> None:
    p = Platform(Store(str(tmp_path / "p.db")), "127.0.0.1", 1, lease=False)  # never started
    answer(p, "d0", 5)  # before the wait
    answer(p, "d1", 4)  # an older version: not yet
    doors = [f"d{i}" for i in range(200)]

    def doors_answer() -> None:
        for d in doors[1:150]:
            answer(p, d, 5)

    t = threading.Thread(target=doors_answer)
    t.start()
    got = p.wait_cache_states(doors, lambda s: s["version"] >= 5, 3.0)
    t.join()
    assert sorted(got) == sorted(doors[:150])  # d150.. never answered: the wait ran out
    assert p._state_watches == []
    all_in = threading.Thread(target=lambda: [answer(p, d, 5) for d in doors[150:]])
    all_in.start()
    assert len(p.wait_cache_states(doors, lambda s: s["version"] >= 5, 30.0)) == 200
    all_in.join()

