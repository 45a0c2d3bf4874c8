"""What operators read: `platform doors` in 80 columns with alarms that agree with the door
(a door still forced open), a lag that is never negative, retiring an old door id; the
monitor's lines (card data only on card events, no `reader None`); the port found when
`--port` is left out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host_tools import ports
from host_tools.cards import sitekeys
from host_tools.cli import run
from host_tools.commands.monitor import describe, line
from host_tools.errors import UserError
from reference_platform.store import Store
from wire import codes as ev
from wire.door import encode_events, encode_status


@pytest.fixture()
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "p.db")
    s = Store(path)
    # a door forced open that never closed, and one forced open and then closed
    s.store_events("hz.b1.forced", [(1, ev.FORCED_OPEN, 1, 100, 0, 1, 0, "")])
    s.store_events("hz.b1.closed", [(1, ev.FORCED_OPEN, 1, 100, 0, 1, 0, ""),
                                    (2, ev.DOOR_CLOSED, 1, 160, 0, 1, 0, "")])
    s.record_presence("hz.b1.forced", True, 1, "0.1.0")
    s.record_presence("hz.b1.closed", True, 1, "0.1.0")
    s.record_status("hz.b1.forced", {"door": "forced_open", "mode": "normal", "alarms": ["forced_open"],
                                     "cache_version": 7, "seq": 1})
    s.record_status("hz.b1.closed", {"door": "closed", "mode": "normal", "alarms": [], "cache_version": 0,
                                     "seq": 2})
    s.store_events("hz.b1.old", [(1, ev.BOOT, 1, 5, 0, 0, 1, "")])
    s.record_presence("hz.b1.old", False, None, None)
    s.close()
    return path


def doors(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = run(["platform", "doors", *args])
    return code, capsys.readouterr().out


def test_a_door_still_forced_open_shows_its_alarm(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["platform", "alarms", "--db", db, "--json"]) == 0
    rows = {(r["door"], r["alarm"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("hz.b1.forced", "forced_open")]["end"] is None
    assert rows[("hz.b1.closed", "forced_open")]["end"] == 160
    code, out = doors(capsys, "--db", db, "--json")
    by_door = {r["door"]: r for r in json.loads(out)}
    assert by_door["hz.b1.forced"]["alarms"] == ["forced_open"] and by_door["hz.b1.closed"]["alarms"] == []


def test_doors_fit_80_columns_and_the_lag_is_never_negative(db: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "site.json"
    sitekeys.write_secret(keys, sitekeys.new_site_keys(1001))
    code, out = doors(capsys, "--db", db, "--keys", str(keys))
    assert code == 0 and max(len(x) for x in out.splitlines()) <= 80, out
    assert "-1" not in out and "ahead" in out  # the door holds v7, the platform issued none
    code, out = doors(capsys, "--db", db, "--keys", str(keys), "--json")
    by_door = {r["door"]: r for r in json.loads(out)}
    assert by_door["hz.b1.forced"]["lag"] is None and by_door["hz.b1.forced"]["ahead"] is True
    assert by_door["hz.b1.closed"]["lag"] == 0
    code, out = doors(capsys, "--db", db, "--detail")
    assert code == 0 and "registered as" in out


def test_a_door_with_its_clock_unset_is_an_alarm_until_it_is_set(
        db: str, capsys: pytest.CaptureFixture[str]) -> None:
    s = Store(db)
    s.record_status("hz.b1.closed", {"door": "closed", "mode": "normal", "alarms": [],
                                     "cache_version": 0, "seq": 2, "setup": ["clock_unset"]})
    s.close()
    assert run(["platform", "alarms", "--db", db, "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["alarm"] == "clock_unset"]
    assert [(r["door"], r["end"]) for r in rows] == [("hz.b1.closed", None)]
    assert run(["platform", "alarms", "--db", db]) == 0
    assert "clock_unset" in capsys.readouterr().out
    code, out = doors(capsys, "--db", db, "--json")
    assert {r["door"]: r for r in json.loads(out)}["hz.b1.closed"]["alarms"] == ["clock_unset"]
    code, out = doors(capsys, "--db", db)
    assert "clock_unset" in out
    s = Store(db)  # the next report: the clock was set by the platform's signed time
    s.record_status("hz.b1.closed", {"door": "closed", "mode": "normal", "alarms": [],
                                     "cache_version": 0, "seq": 2, "clock_trusted": True})
    s.close()
    assert run(["platform", "alarms", "--db", db, "--json"]) == 0
    assert "clock_unset" not in capsys.readouterr().out
    code, out = doors(capsys, "--db", db, "--json")
    assert {r["door"]: r for r in json.loads(out)}["hz.b1.closed"]["alarms"] == []


def test_a_door_with_the_latest_version_but_other_cards_is_shown(db: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import datetime as dt

    from reference_platform.cards import CardRegistry

    keys = tmp_path / "site.json"
    site = sitekeys.new_site_keys(1001)
    sitekeys.write_secret(keys, site)
    s = Store(db)
    reg = CardRegistry(s, sitekeys.load(keys)[0])
    day = dt.date(2026, 1, 1)
    assert reg.issue("00112233445566ff", "r-1", "1", [0], day, day + dt.timedelta(days=9)) == 1
    s.record_status("hz.b1.closed", {"door": "closed", "mode": "normal", "alarms": [],
                                     "cache_version": 1, "seq": 2, "cache_hash": "0011223344556677"})
    s.record_status("hz.b1.forced", {"door": "forced_open", "mode": "normal", "alarms": ["forced_open"],
                                     "cache_version": 1, "seq": 1, "cache_hash": reg.content_hash()})
    s.close()
    code, out = doors(capsys, "--db", db, "--keys", str(keys), "--json")
    by_door = {r["door"]: r for r in json.loads(out)}
    assert by_door["hz.b1.closed"]["differs"] is True
    assert by_door["hz.b1.closed"]["whitelist_hash"] == "0011223344556677"
    assert by_door["hz.b1.forced"]["differs"] is False and by_door["hz.b1.forced"]["lag"] == 0
    code, out = doors(capsys, "--db", db, "--keys", str(keys))
    assert code == 0 and max(len(x) for x in out.splitlines()) <= 80, out
    row = [x for x in out.splitlines() if x.startswith("hz.b1.closed")][0]
    assert " differs " in row and "differs: the latest version, other cards" in out


LONG_ID = "hauptstrasse-12-hinterhaus.building-b.staircase-3.door-14"


def test_a_long_door_id_does_not_wrap_the_80_column_view(db: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    s = Store(db)
    s.record_presence(LONG_ID, True, 1, "0.1.0")
    s.record_status(LONG_ID, {"door": "closed", "mode": "normal", "alarms": ["held_open"],
                              "cache_version": 1, "seq": 0})
    s.close()
    code, out = doors(capsys, "--db", db)
    lines = out.splitlines()
    assert code == 0 and max(len(x) for x in lines) <= 80, out
    row = [x for x in lines if x.startswith("hauptstrasse")]
    assert len(row) == 1 and "held_open" in row[0], out  # one line, the alarm on it
    shown = row[0].split()[0]
    assert len(shown) <= 25 and "…" in shown and shown.endswith("door-14"), shown
    assert "--detail or --json show it whole" in out
    code, out = doors(capsys, "--db", db, "--json")
    assert LONG_ID in [r["door"] for r in json.loads(out)]
    code, out = doors(capsys, "--db", db, "--detail")
    assert LONG_ID in out


def test_retiring_an_old_door_id(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["platform", "retire", "hz.b1.forced", "--db", db]) == 2  # online: refused
    assert "is online" in capsys.readouterr().err
    assert run(["platform", "retire", "hz.b1.old", "--db", db]) == 0
    assert "its 1 events are kept" in capsys.readouterr().out
    code, out = doors(capsys, "--db", db, "--json")
    assert "hz.b1.old" not in [r["door"] for r in json.loads(out)]
    assert Store(db).count("hz.b1.old") == 1


def test_the_monitor_labels_only_card_events_with_a_card() -> None:
    batch = [(5, ev.ACCESS_GRANTED, 1, 100, 0, 1, 1, "5101013aeef2e95e"),
             (6, ev.TIME_SET, 1, 101, 0, 1, 0, "5bbb056b00000002")]
    rec = describe("events", encode_events(1, batch))
    assert rec is not None
    text = line(rec)
    assert text[0].endswith("card 5101013aeef2e95e")
    assert "card" not in text[1] and text[1].endswith("data 5bbb056b00000002")
    status = describe("status", encode_status({"door": "closed", "mode": "normal", "lock": "locked",
                                                        "alarms": [], "journal_depth": 3, "cache_version": 1,
                                                        "seq": 3}))
    assert status is not None and "reader" not in line(status)[0]


def test_the_port_is_found_like_mpremote_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "usb_serial_ports", lambda: [])
    with pytest.raises(UserError, match="no USB serial port found") as e:
        ports.pick_port(None)
    assert e.value.exit_code == 3
    monkeypatch.setattr(ports, "usb_serial_ports", lambda: ["/dev/ttyACM0", "/dev/ttyUSB0"])
    with pytest.raises(UserError, match="several USB serial ports .*ttyACM0, /dev/ttyUSB0.*--port"):
        ports.pick_port(None)
    monkeypatch.setattr(ports, "usb_serial_ports", lambda: ["/dev/ttyUSB0"])
    assert ports.pick_port(None) == "/dev/ttyUSB0"
    assert ports.pick_port("/dev/pts/4") == "/dev/pts/4"
