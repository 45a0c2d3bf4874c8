"""Events a door lost, as the platform keeps and reports them: the watermark moves past a
`gap` event or a `gone` range, the loss is counted exactly (minus what the platform holds),
placed in time, and shown by `platform doors`, `alarms` and the residence report."""

from __future__ import annotations

import datetime as dt
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

from reference_platform.store import Store
from wire.codes import GAP as CODE_GAP

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
DAY = 86400
T0 = int(dt.datetime(2026, 1, 10, tzinfo=dt.UTC).timestamp())
REF = "5101013aeef2e95e"


def ev(seq: int, t: int, code: int = 1, flags: int = 1, data: str = REF) -> tuple:
    return (seq, code, 1, t, 0, flags, 1, data)


def gap_event(seq: int, first: int, last: int) -> tuple:
    return (seq, CODE_GAP, 1, 0, 0, 0, 0, struct.pack("<II", first, last).hex())


def test_a_gone_range_moves_the_watermark_and_is_reported_exactly(db_url: str) -> None:
    s = Store(db_url)
    assert s.store_events("d", [ev(i, T0 + i) for i in range(1, 11)]) == 10
    # The door overflowed: 11..40 lost; 41.. arrive; the watermark waits for the hole.
    assert s.store_events("d", [ev(i, T0 + 40 * DAY + i) for i in range(41, 51)]) == 10
    assert s.next_stored("d", 10) == 41
    # Its answer to the resend request: 11..40 gone (with 5..10, which the platform has).
    assert s.store_events("d", [], gone=(5, 40)) == 50
    assert s.lost("d") == [{"first": 11, "last": 40, "count": 30, "after": T0 + 10,
                            "before": T0 + 40 * DAY + 41}]
    # Later the door's own gap event for the same loss: counted once.
    assert s.store_events("d", [gap_event(51, 1, 40)]) == 51
    assert [(g["first"], g["last"], g["count"]) for g in s.lost("d")] == [(11, 40, 30)]
    assert s.missing("d") == []


def test_lost_ranges_merge_and_skip_events_without_a_utc_time(db_url: str) -> None:
    s = Store(db_url)
    s.store_events("d", [ev(1, T0), ev(2, 30, flags=0), gap_event(5, 3, 4)])
    s.store_events("d", [], gone=(6, 9))
    s.store_events("d", [gap_event(10, 8, 12), ev(13, T0 + 100)])
    assert s.ack_upto("d") == 13
    # 3-4, 6-9, 11-12 (the gap events at 5 and 10 are held); the spans skip event 2 (its
    # time is seconds since boot).
    assert [(g["first"], g["last"], g["after"], g["before"]) for g in s.lost("d")] == [
        (3, 4, T0, T0 + 100), (6, 9, T0, T0 + 100), (11, 12, T0, T0 + 100)]


def doorctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([DOORCTL, "platform", *args], capture_output=True, text=True, timeout=60,
                          env=env)


def test_doors_alarms_and_the_residence_report_show_the_loss(tmp_path: Path) -> None:
    db = str(tmp_path / "p.db")
    s = Store(db)
    s.store_events("d1", [ev(1, T0), ev(2, T0 + DAY)])
    s.store_events("d1", [ev(40, T0 + 40 * DAY)])  # January 11 .. February 19: lost
    s.store_events("d1", [], gone=(3, 39))
    s.store_events("d2", [ev(1, T0 + 2 * DAY)])
    s.close()
    doors = json.loads(doorctl("doors", "--db", db, "--json").stdout)
    assert {d["door"]: d["lost"] for d in doors} == {"d1": 37, "d2": 0}
    assert all("events_lost" not in d["alarms"] for d in doors)
    alarms = json.loads(doorctl("alarms", "--db", db, "--json").stdout)
    assert [(a["door"], a["count"], a["start"], a["end"]) for a in alarms
            if a["alarm"] == "events_lost"] == [("d1", 37, T0 + DAY, T0 + 40 * DAY)]
    assert "events_lost (37: seq 3-39)" in doorctl("alarms", "--db", db).stdout
    out = doorctl("residence-report", "--card", REF, "--from", "2026-01-01", "--to", "2026-03-31",
                  "--db", db, "--json")
    report = json.loads(out.stdout)
    assert report["incomplete"] == ["2026-01", "2026-02"]
    assert report["days_with_entry"]["2026-03"] == 0  # no loss in March: truly none
    text = doorctl("residence-report", "--card", REF, "--from", "2026-01-01", "--to", "2026-03-31",
                   "--db", db).stdout
    assert "2026-02   1 days with an entry  INCOMPLETE: a door lost events this month" in text
    assert "d1" not in text  # the report names no doors
    assert "2026-03   0 days with an entry\n" in text
