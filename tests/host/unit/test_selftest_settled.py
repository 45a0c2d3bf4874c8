"""`doorctl selftest --wait` judges a door only once it has settled: a door just restarted
lacks its reader link, its uplink, the platform's time or its acknowledgements for a while,
and judging it then fails items that pass a second later."""

from __future__ import annotations

from typing import Any

import pytest

from host_tools.commands.selftest import settled

SETTLED: dict[str, Any] = {"ready": True, "reader": "pn532 v1.6", "broker": "mqtt://h:1883",
                           "connected": True, "clock": 1_780_000_000, "journal": [7, 7, 5]}


def test_a_running_door_with_reader_uplink_time_and_acks_is_settled() -> None:
    assert settled(SETTLED)


@pytest.mark.parametrize("change", [
    {"ready": False},
    {"reader": "absent"},  # the reader link comes back after the uplink on a busy door
    {"reader": None},
    {"connected": False},
    {"clock": None},
    {"journal": [7, 7, 0]},
    {"journal": None},
])
def test_a_door_that_still_lacks_one_part_is_not_settled(change: dict[str, Any]) -> None:
    assert not settled({**SETTLED, **change})


def test_without_a_broker_running_with_its_reader_is_enough() -> None:
    assert settled({"ready": True, "reader": "pn532 v1.6", "broker": None})
    assert not settled({"ready": True, "reader": "absent", "broker": None})
