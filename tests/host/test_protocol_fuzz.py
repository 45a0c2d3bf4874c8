"""Any inbound payload either decodes to valid values or raises ProtocolError — nothing else."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import protocol as p

DECODERS = [p.decode_events, p.decode_ack, p.decode_command, p.decode_time, p.decode_presence,
            p.decode_status, p.decode_reply, p.decode_cache_state, p.decode_cache_chunk]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=30,
)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape(data: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(data)
        except p.ProtocolError:
            pass


@settings(max_examples=400)
@given(json_values, st.sampled_from(["ev", "upto", "id", "op", "t", "online", "args", "boot"]))
def test_structured_garbage_never_escapes(value: object, key: str) -> None:
    payload = json.dumps({"v": 1, key: value, "boot": 1, "id": "x", "op": "patrol"}).encode()
    for decode in DECODERS:
        try:
            decode(payload)
        except p.ProtocolError:
            pass


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
                          st.integers(0, 999), st.integers(0, 255), st.integers(0, 0xFFFF),
                          st.binary(max_size=12)), min_size=1, max_size=p.MAX_BATCH))
def test_events_round_trip(rows: list[tuple[int, int, int, int, int, int, bytes]]) -> None:
    events = [(i + 1, c, b, t, ms, f, a, d.hex()) for i, (c, b, t, ms, f, a, d) in enumerate(rows)]
    assert p.decode_events(p.encode_events(1, events)) == events


@given(st.text(max_size=80))
def test_split_topic_total(t: str) -> None:
    try:
        device, leaf = p.split_topic(t)
    except p.ProtocolError:
        return
    assert p.topic(device, leaf) == t


_args = st.dictionaries(st.text(max_size=6), st.one_of(st.booleans(), st.integers(-5, 2**40),
                                                        st.text(max_size=8)), max_size=4)
_cmd = st.tuples(st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8),
                 st.sampled_from(list(p.COMMANDS)), _args, st.integers(0, 2**32))


@settings(max_examples=400)
@given(_cmd, _cmd)
def test_command_signing_bytes_differ_when_commands_differ(a: tuple, b: tuple) -> None:  # type: ignore[type-arg]
    """What the MAC covers is injective: no two different commands sign the same bytes."""
    def norm(c: tuple) -> tuple:  # type: ignore[type-arg]
        return c[:3] + (sorted((k, type(v).__name__, v) for k, v in c[3].items()), c[4])

    if norm(a) != norm(b):
        assert p.command_signing_bytes(*a) != p.command_signing_bytes(*b)
    else:
        assert p.command_signing_bytes(*a) == p.command_signing_bytes(*b)


@settings(max_examples=300)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.binary(max_size=300))
def test_cache_chunk_headers_decode_or_are_refused(version: int, total: int, offset: int,
                                                   data: bytes) -> None:
    msg = p.encode_cache_chunk(version, total, offset, data)
    try:
        v, t, o, d = p.decode_cache_chunk(msg)
    except p.ProtocolError:
        return
    assert (v, t, o, bytes(d)) == (version, total, offset, data)
    assert 0 < t <= p.CACHE_MAX_FILE and o + len(d) <= t
