"""Any inbound payload either decodes to valid values or raises ProtocolError — nothing else."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from wire import common
from wire.door import (
    decode_ack,
    decode_cache_chunk,
    decode_command,
    decode_signed_time,
    decode_time,
    encode_events,
)
from wire.platform import (
    command_signing_bytes,
    decode_cache_state,
    decode_events,
    decode_presence,
    decode_reply,
    decode_status,
    encode_cache_chunk,
    encode_signed_time,
)

DECODERS = [decode_events, decode_ack, decode_command, decode_time, decode_presence,
            decode_status, decode_reply, decode_cache_state, decode_cache_chunk]

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
        except common.ProtocolError:
            pass


@settings(max_examples=400)
@given(json_values, st.sampled_from(["ev", "upto", "id", "op", "t", "online", "args", "boot"]))
def test_structured_garbage_never_escapes(value: object, key: str) -> None:
    payload = json.dumps({"v": 1, key: value, "boot": 1, "id": "x", "op": "patrol"}).encode()
    for decode in DECODERS:
        try:
            decode(payload)
        except common.ProtocolError:
            pass


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
                          st.integers(0, 999), st.integers(0, 255), st.integers(0, 0xFFFF),
                          st.binary(max_size=12)), min_size=1, max_size=common.MAX_BATCH))
def test_events_round_trip(rows: list[tuple[int, int, int, int, int, int, bytes]]) -> None:
    events = [(i + 1, c, b, t, ms, f, a, d.hex()) for i, (c, b, t, ms, f, a, d) in enumerate(rows)]
    assert decode_events(encode_events(1, events)) == events


@given(st.text(max_size=80))
def test_split_topic_total(t: str) -> None:
    try:
        device, leaf = common.split_topic(t)
    except common.ProtocolError:
        return
    assert common.topic(device, leaf) == t


_args = st.dictionaries(st.text(max_size=6), st.one_of(st.booleans(), st.integers(-5, 2**40),
                                                        st.text(max_size=8)), max_size=4)
_cmd = st.tuples(st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8),
                 st.sampled_from(list(common.COMMANDS)), _args, st.integers(0, 2**32))


@settings(max_examples=400)
@given(_cmd, _cmd)
def test_command_signing_bytes_differ_when_commands_differ(a: tuple, b: tuple) -> None:  # type: ignore[type-arg]
    """What the MAC covers is injective: no two different commands sign the same bytes."""
    def norm(c: tuple) -> tuple:  # type: ignore[type-arg]
        return c[:3] + (sorted((k, type(v).__name__, v) for k, v in c[3].items()), c[4])

    if norm(a) != norm(b):
        assert command_signing_bytes(*a) != command_signing_bytes(*b)
    else:
        assert command_signing_bytes(*a) == command_signing_bytes(*b)


@settings(max_examples=300)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.binary(max_size=300))
def test_cache_chunk_headers_decode_or_are_refused(version: int, total: int, offset: int,
                                                   data: bytes) -> None:
    msg = encode_cache_chunk(version, total, offset, data, b"k" * 32)
    try:
        v, t, o, tag, d = decode_cache_chunk(msg)
    except common.ProtocolError:
        return
    assert (v, t, o, bytes(d)) == (version, total, offset, data)
    assert tag == common.cache_chunk_tag(b"k" * 32, v, t, o, d)
    assert 0 < t <= common.CACHE_MAX_FILE and o + len(d) <= t


def _depth(v: object) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


deep_values = st.recursive(
    st.none() | st.integers() | st.text(alphabet='ab[]{}"\\,: ', max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(alphabet='k[]{}"\\', max_size=4), inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=500)
@given(deep_values)
def test_the_shape_check_measures_nesting_exactly_whatever_the_strings_hold(value: object) -> None:
    # Brackets, quotes and backslashes inside strings must not count: the bound is the JSON's
    # real nesting, so a legitimate message is never refused and a deep one always is.
    payload = json.dumps(value).encode()
    try:
        common.check_shape(payload, max_len=len(payload))
        accepted = True
    except common.ProtocolError as e:
        assert e.reason == "too_deep"
        accepted = False
    assert accepted == (_depth(value) <= common.MAX_DEPTH)


@settings(max_examples=300)
@given(st.binary(max_size=400), st.integers(0, 400))
def test_the_shape_check_refuses_by_length_and_never_raises_anything_else(data: bytes,
                                                                          limit: int) -> None:
    try:
        common.check_shape(data, max_len=limit)
    except common.ProtocolError as e:
        assert e.reason in ("too_large", "too_deep")
        if e.reason == "too_large":
            assert len(data) > limit
    else:
        assert len(data) <= limit


@settings(max_examples=200)
@given(st.integers(1577836800000, 4102444800000), st.text("0123456789abcdef", min_size=16, max_size=16),
       st.text(max_size=30))
def test_a_signed_time_round_trips_and_its_signing_bytes_are_length_prefixed(
        t: int, nonce: str, device: str) -> None:
    assert decode_signed_time(encode_signed_time(t, nonce, "ab" * 32)) == (t, nonce, "ab" * 32)
    b = common.time_signing_bytes(device, nonce, t)
    assert b == b"door-time/v1|%d:%s16:%s%d" % (len(device.encode()), device.encode(), nonce.encode(), t)
