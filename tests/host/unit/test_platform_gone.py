"""The platform takes a door's `gone` range (events it no longer holds, in answer to a resend
request) only for a hole it sees: from its watermark to below an event it holds. A publisher on
the door's events topic cannot declare a fake loss, or move the signed ack past what is stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire import common
from wire.door import encode_events

DEVICE = "gone.b1.d1"


def event(seq: int) -> list[object]:
    return [seq, 1, 7, 1767225600, 0, 1, 0, ""]


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    p = Platform(Store(str(tmp_path / "p.db")), "127.0.0.1", 1, lease=False)  # never started
    topic = common.topic(DEVICE, "events")
    p._handle(topic, encode_events(7, [event(s) for s in range(1, 11)]))
    p._handle(topic, encode_events(7, [event(s) for s in range(20, 26)]))  # 11..19 missing
    assert p.store.ack_upto(DEVICE) == 10
    return p


def send_gone(p: Platform, gone: tuple[int, int], events: list[list[object]] | None = None) -> None:
    p._handle(common.topic(DEVICE, "events"), encode_events(7, events or [], gone))


@pytest.mark.parametrize("gone", [(11, 0xFFFFFFFF), (11, 20), (12, 19), (5, 19), (1, 10)])
def test_a_gone_range_outside_the_hole_is_refused(platform: Platform, gone: tuple[int, int]) -> None:
    with pytest.raises(common.ProtocolError) as e:
        send_gone(platform, gone)
    assert e.value.reason == "bad_gone"
    assert platform.store.ack_upto(DEVICE) == 10
    assert platform.store.lost(DEVICE) == []


def test_a_gone_range_reaching_into_its_own_batch_is_refused(platform: Platform) -> None:
    with pytest.raises(common.ProtocolError):
        send_gone(platform, (11, 15), [event(15), event(16)])


def test_the_doors_answer_for_the_hole_is_taken(platform: Platform) -> None:
    send_gone(platform, (11, 14), [event(s) for s in range(15, 20)])
    assert platform.store.ack_upto(DEVICE) == 25
    lost = platform.store.lost(DEVICE)
    assert [(g["first"], g["last"]) for g in lost] == [(11, 14)]
