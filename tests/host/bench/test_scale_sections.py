"""`doorctl bench` asked for some of the scale figures runs only the sections that measure
them: asking for the SQLite drain's rate used to start the whole city (16,900 doors) too."""

from __future__ import annotations

from typing import Any

import pytest

from host_tools.benchmarks import scale


def test_the_drain_alone_does_not_start_the_city(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def city(*a: Any) -> None:
        ran.append("city")

    def tls(*a: Any) -> None:
        ran.append("tls")

    monkeypatch.setattr(scale, "_online_and_lost_card", city)
    monkeypatch.setattr(scale, "_tls_lost_card", tls)
    monkeypatch.setattr(scale, "DRAIN_DOORS", 5)
    monkeypatch.setattr(scale, "DRAIN_EVENTS", 10)
    out = scale.run({"scale.baseline_events_per_s"})
    assert ran == []
    assert set(out) == {"scale.baseline_events_per_s"}
    assert scale.run({"scale.tls_lost_card_p95_s"}) == {} and ran == ["tls"]
    assert scale.run({"scale.lost_card_last_door_s"}) == {} and ran == ["tls", "city"]
