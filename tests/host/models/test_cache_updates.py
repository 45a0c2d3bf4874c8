"""Whitelist cache against a plain in-memory model (hypothesis): any sequence of snapshots,
deltas, merges, reboots and refused updates gives the model's decisions; codecs round-trip;
any corruption of an update is refused and changes nothing."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host_tools import cache_build as cb
from host_tools.cache_build import pack_record
from offline_cache import fmt
from offline_cache.cache import Cache
from offline_cache.fmt import CacheError

KEY = b"model-key-0123456789abcdef012345"
SITE = 11
DAY = 20000
REFS = [bytes([0, 0, 0, 0, 0, 0, i // 4, i * 37 % 256]) for i in range(24)]
TIMES = [DAY * 86400 + h * 3600 + 60 * m for h, m in ((3, 0), (12, 30), (20, 0))] + [
    (DAY + d) * 86400 + 10 * 3600 for d in (-6, -1, 1, 2, 5)]

card_st = st.tuples(
    st.sampled_from(range(4)),  # status
    st.booleans(),  # master
    st.sampled_from([0, 0, 1, 2, 9]),  # schedule (9 is never defined)
    st.integers(DAY - 5, DAY + 2),  # start
    st.one_of(st.integers(DAY - 2, DAY + 5), st.just(fmt.NO_END)),  # end
    st.integers(0, 0xFFFF),  # groups
)
cards_st = st.dictionaries(st.sampled_from(REFS), card_st, max_size=len(REFS))
sched_st = st.fixed_dictionaries({
    1: st.lists(st.tuples(st.integers(0, 255), st.integers(0, 1439), st.integers(1, 1440))
                .filter(lambda t: t[1] < t[2]), min_size=1, max_size=3),
    2: st.just([(0x80, 0, 1440)]),
})
holidays_st = st.lists(st.integers(DAY - 2, DAY + 6), max_size=3)

op_st = st.one_of(
    st.tuples(st.just("snapshot"), cards_st, sched_st, holidays_st),
    st.tuples(st.just("delta"), st.dictionaries(st.sampled_from(REFS), st.one_of(st.none(), card_st),
                                                max_size=8), sched_st, holidays_st),
    st.tuples(st.just("merge")), st.tuples(st.just("reboot")),
    st.tuples(st.just("replay")), st.tuples(st.just("wrong_base")),
)


def _rec(ref: bytes, c: tuple[int, bool, int, int, int, int] | None) -> bytes:
    if c is None:
        return pack_record(ref, 0, False, 0, 0, 0, 0, delete=True)
    return pack_record(ref, c[0], c[1], c[2], c[3], c[4], c[5])


def model_decide(m: dict, ref: bytes, door: int, now: int, mode: str) -> tuple[bool, str, bool]:
    c = m["cards"].get(ref)
    if c is None:
        return False, "unknown", False
    status, master, sid, start, end, groups = c
    if status:
        return False, fmt.STATUS_NAMES[status], master
    day, wd, minute = now // 86400, (now // 86400 + 3) % 7, now % 86400 // 60
    if day < start:
        return False, "not_yet_valid", master
    if end != fmt.NO_END and day > end:
        return False, "expired", master
    if mode == "lockdown" and not master:
        return False, "lockdown", master
    if not groups >> door & 1:
        return False, "not_permitted", master
    if sid:
        bit = 0x80 if day in m["holidays"] else 1 << wd
        if not any(d & bit and a <= minute < b for d, a, b in m["schedules"].get(sid, [])):
            return False, "outside_schedule", master
    return True, "granted", master


def _check(c: Cache, m: dict) -> None:
    assert c.version == m["version"]
    for ref in REFS:
        for now in TIMES:
            for door in (0, 5, 15):
                for mode in ("normal", "lockdown"):
                    assert c.decide(ref, door, now, mode) == model_decide(m, ref, door, now, mode), (
                        ref.hex(), door, now, mode)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=cards_st, ops=st.lists(op_st, max_size=8))
def test_any_sequence_decides_like_the_model(first: dict, ops: list) -> None:
    with tempfile.TemporaryDirectory() as d:
        c = Cache(d, KEY, SITE)
        m = {"version": 1, "cards": dict(first), "schedules": {2: [(0x80, 0, 1440)]}, "holidays": set()}
        c.apply_bytes(cb.build(KEY, fmt.KIND_SNAPSHOT, 1, 0, SITE, 0xFFFF, 0,
                                [_rec(r, v) for r, v in first.items()], m["schedules"], []))
        last = b""
        for op in ops:
            kind = op[0]
            if kind == "snapshot":
                v = m["version"] + 1 + len(op[1]) % 3
                last = cb.build(KEY, fmt.KIND_SNAPSHOT, v, 0, SITE, 0xFFFF, 0,
                                 [_rec(r, x) for r, x in op[1].items()], op[2], op[3])
                assert c.apply_bytes(last) == v
                m = {"version": v, "cards": dict(op[1]), "schedules": op[2], "holidays": set(op[3])}
            elif kind == "delta":
                v = m["version"] + 1
                last = cb.build(KEY, fmt.KIND_DELTA, v, m["version"], SITE, 0xFFFF, 0,
                                 [_rec(r, x) for r, x in op[1].items()], op[2], op[3])
                assert c.apply_bytes(last) == v
                cards = dict(m["cards"])
                for r, x in op[1].items():
                    if x is None:
                        cards.pop(r, None)
                    else:
                        cards[r] = x
                m = {"version": v, "cards": cards, "schedules": op[2], "holidays": set(op[3])}
            elif kind == "merge":
                c.maintain()
                assert c.overlay is None
            elif kind == "reboot":
                c.close()
                c = Cache(d, KEY, SITE)
            elif kind == "replay" and last:
                try:
                    c.apply_bytes(last)
                    raise AssertionError("replay accepted")
                except CacheError as e:
                    assert e.reason == "stale_version"
            elif kind == "wrong_base":
                bad = cb.build(KEY, fmt.KIND_DELTA, m["version"] + 2, m["version"] + 1, SITE, 0xFFFF, 0,
                                [], {}, [])
                try:
                    c.apply_bytes(bad)
                    raise AssertionError("delta on another base accepted")
                except CacheError as e:
                    assert e.reason == "base_mismatch"
            _check(c, m)
        c.close()


@settings(max_examples=150, deadline=None)
@given(cards=cards_st, delta=st.booleans(), data=st.data())
def test_any_corruption_is_refused_and_changes_nothing(cards: dict, delta: bool, data: st.DataObject) -> None:
    kind, base = (fmt.KIND_DELTA, 1) if delta else (fmt.KIND_SNAPSHOT, 0)
    good = cb.build(KEY, kind, 2, base, SITE, 0xFFFF, 0, [_rec(r, v) for r, v in cards.items()],
                     {1: [(0x7F, 0, 600)]}, [DAY])
    how = data.draw(st.sampled_from(["flip", "truncate", "extend", "byte"]))
    bad = bytearray(good)
    if how == "flip":
        i = data.draw(st.integers(0, len(bad) - 1))
        bad[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "byte":
        i = data.draw(st.integers(0, len(bad) - 1))
        bad[i] = data.draw(st.integers(0, 255).filter(lambda b: b != good[i]))
    elif how == "truncate":
        del bad[data.draw(st.integers(0, len(bad) - 1)):]
    else:
        bad += data.draw(st.binary(min_size=1, max_size=20))
    with tempfile.TemporaryDirectory() as d:
        c = Cache(d, KEY, SITE)
        c.apply_bytes(cb.build(KEY, fmt.KIND_SNAPSHOT, 1, 0, SITE, 0xFFFF, 0, [_rec(REFS[0], None)[:8]
                                + bytes(7)], {}, []))
        try:
            c.apply_bytes(bytes(bad))
            raise AssertionError("corrupted update accepted")
        except CacheError as e:
            assert e.reason in ("bad_tag", "malformed")
        assert c.version == 1 and c.overlay is None
        assert sorted(p.name for p in Path(d).iterdir()) == ["floor", "main.bin"]
        c.close()


@given(ref=st.binary(min_size=8, max_size=8), c=card_st, delete=st.booleans())
def test_record_codec_round_trips(ref: bytes, c: tuple, delete: bool) -> None:
    raw = pack_record(ref, *c, delete=delete)
    r, flags, start, end, groups = fmt.unpack_record(raw)
    assert r == ref and len(raw) == fmt.REC_SIZE
    if delete:
        assert flags == fmt.DELETE
    else:
        assert (flags & 3, bool(flags & 4), flags >> 3, start, end, groups) == c


@given(s=st.dictionaries(st.integers(1, 30), st.lists(
    st.tuples(st.integers(0, 255), st.integers(0, 1439), st.integers(1, 1440)).filter(lambda t: t[1] < t[2]),
    max_size=4)))
def test_schedule_codec_round_trips(s: dict) -> None:
    assert fmt.parse_schedules(cb.pack_schedules(s)) == s


@given(raw=st.binary(max_size=60))
def test_schedule_parser_refuses_or_parses_never_crashes(raw: bytes) -> None:
    try:
        fmt.parse_schedules(raw)
    except CacheError as e:
        assert e.reason == "malformed"


_ref8 = st.binary(min_size=8, max_size=8)
# References as keyed hashes give them (random), and as they stress the RAM index's 4-byte
# entries: runs sharing their first 4 bytes across index entries (a few prefixes), all sharing
# leading bytes (small numbers: the index keeps the bytes after those), or one byte apart.
_prefixed = st.builds(lambda p, s: p + s, st.sampled_from([bytes(4), b"\x00\x00\x00\x01",
                                                           b"\x7f\xff\xff\xff", b"\x80" + bytes(3)]),
                      st.binary(min_size=4, max_size=4))
_small = st.integers(0, 1 << 20).map(lambda v: v.to_bytes(8, "big"))
_refs_st = st.one_of(st.sets(_ref8, max_size=600), st.sets(st.one_of(_prefixed, _ref8), max_size=600),
                     st.sets(_small, max_size=600), st.sets(_prefixed, min_size=200, max_size=600))


def _near(r: bytes) -> list[bytes]:
    v = int.from_bytes(r, "big")
    return [x.to_bytes(8, "big") for x in (v - 1, v + 1, v ^ (1 << 32), v ^ (1 << 31))
            if 0 <= x < 1 << 64]


@settings(max_examples=80, deadline=None)
@given(refs=_refs_st, probes=st.lists(_ref8, max_size=30),
       max_index=st.sampled_from([1, 2, 3, 5, 512]))
def test_lookup_finds_exactly_the_listed_cards_whatever_the_index(refs: set, probes: list,
                                                                   max_index: int) -> None:
    from offline_cache import cache as cache_mod
    with tempfile.TemporaryDirectory() as d:
        data = cb.build(KEY, fmt.KIND_SNAPSHOT, 1, 0, SITE, 0xFFFF, 0,
                         [pack_record(r, 0, False, 0, 0, fmt.NO_END, 1) for r in refs], {}, [])
        old = cache_mod.MAX_INDEX
        cache_mod.MAX_INDEX = max_index
        try:
            c = Cache(d, KEY, SITE)
            c.apply_bytes(data)
        finally:
            cache_mod.MAX_INDEX = old
        listed = sorted(refs)
        sample = listed[::max(1, len(listed) // 40)] + listed[-1:]
        for r in sample + [n for s in sample for n in _near(s)] + probes + [bytes(8), b"\xff" * 8]:
            rec = c.lookup(r)
            assert (rec is not None) == (r in refs) and (rec is None or rec[0] == r)
        c.close()


def test_overlay_left_behind_by_a_cut_after_the_merge_is_dropped() -> None:
    with tempfile.TemporaryDirectory() as d:
        c = Cache(d, KEY, SITE)
        c.apply_bytes(cb.build(KEY, fmt.KIND_SNAPSHOT, 1, 0, SITE, 0xFFFF, 0, [_rec(REFS[0], (0, False, 0, 0,
                                fmt.NO_END, 1))], {}, []))
        c.apply_bytes(cb.build(KEY, fmt.KIND_DELTA, 2, 1, SITE, 0xFFFF, 0, [_rec(REFS[0], None)], {}, []))
        overlay = (Path(d) / "overlay.bin").read_bytes()
        assert c.maintain()
        c.close()
        (Path(d) / "overlay.bin").write_bytes(overlay)  # as if power went before its removal
        c = Cache(d, KEY, SITE)
        assert c.error is None and c.overlay is None and c.version == 2
        assert not (Path(d) / "overlay.bin").exists()
        assert c.decide(REFS[0], 0, DAY * 86400) == (False, "unknown", False)
        c.close()


def test_flash_error_during_install_keeps_the_old_cache(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from offline_cache import cache as cache_mod

    def full(*_: object) -> None:
        raise OSError(28, "no space")

    with tempfile.TemporaryDirectory() as d:
        c = Cache(d, KEY, SITE)
        c.apply_bytes(cb.build(KEY, fmt.KIND_SNAPSHOT, 1, 0, SITE, 0xFFFF, 0, [_rec(REFS[0], (0, False, 0, 0,
                                fmt.NO_END, 1))], {}, []))
        c.apply_bytes(cb.build(KEY, fmt.KIND_DELTA, 2, 1, SITE, 0xFFFF, 0, [_rec(REFS[1], (0, False, 0, 0,
                                fmt.NO_END, 1))], {}, []))
        monkeypatch.setattr(cache_mod.os, "rename", full)
        for update in (cb.build(KEY, fmt.KIND_SNAPSHOT, 3, 0, SITE, 0xFFFF, 0, [], {}, []),
                       cb.build(KEY, fmt.KIND_DELTA, 3, 2, SITE, 0xFFFF, 0, [_rec(REFS[0], None)], {}, [])):
            try:
                c.apply_bytes(update)
                raise AssertionError("install on a failing flash reported success")
            except CacheError as e:
                assert e.reason == "storage"
            assert c.version == 2 and c.error is None
            assert c.decide(REFS[0], 0, DAY * 86400)[0] and c.decide(REFS[1], 0, DAY * 86400)[0]
        try:
            c.maintain()
            raise AssertionError("merge on a failing flash reported success")
        except CacheError as e:
            assert e.reason == "storage"
        monkeypatch.undo()
        assert c.version == 2 and c.overlay is not None and c.maintain() and c.version == 2
        assert sorted(p.name for p in Path(d).iterdir()) == ["floor", "main.bin"]
        c.close()
