# Refused inbound messages: counted in RAM, one summary record a window (both interpreters).
import struct

from firmware.refusals import REASONS, Refusals, code


def _diff(a, b):
    return a - b


def test_counts_by_reason_and_logs_each_reason_once_per_window():
    lines = []
    r = Refusals(60000, log=lambda *a: lines.append(a))
    for _ in range(500):
        r.refuse("too_large", "door/v1/d/cmd")
    r.refuse("retained", "door/v1/d/time")
    assert r.by_reason == {"too_large": 500, "retained": 1} and r.total == 501
    assert len(lines) == 2


def test_one_summary_per_window_with_the_most_frequent_reasons_first():
    r = Refusals(60000)
    assert not r.due(0, _diff)
    for reason, n in (("too_large", 3), ("too_deep", 70000), ("retained", 1), ("bad_mac", 2),
                      ("not_json", 5)):
        for _ in range(n):
            r.refuse(reason)
    assert r.due(0, _diff)
    n, data = r.take(0)
    assert n == 0xFFFF  # capped to the event's 16-bit arg
    pairs = [struct.unpack("<BH", data[i:i + 3]) for i in range(0, len(data), 3)]
    assert pairs == [(code("too_deep"), 0xFFFF), (code("not_json"), 5), (code("too_large"), 3),
                     (code("bad_mac"), 2)]
    r.refuse("retained")
    assert not r.due(59999, _diff)  # a window after the last summary, not before
    assert r.due(60000, _diff)
    assert r.take(60000) == (1, struct.pack("<BH", code("retained"), 1))
    assert not r.due(200000, _diff)  # nothing waiting: no record
    assert r.by_reason["retained"] == 2  # the status keeps counting since boot


def test_each_reason_has_its_own_code_and_one_not_listed_99():
    names = [n for n in REASONS if n]
    assert len(set(names)) == len(names) == 21
    assert [code(n) for n in names] == list(range(1, 22))
    assert code("no_such_reason") == code("") == code(None) == 99
