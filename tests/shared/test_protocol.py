# mpy-heapsize: 96K
# (96K: the too_large case below allocates a 16 KiB payload, compiled from source on PyPI.)
# Protocol v1 codec vectors: the same bytes decode the same way under CPython and MicroPython.
from wire import common
from wire.door import (
    decode_ack,
    decode_command,
    decode_time,
    encode_events,
    encode_presence,
    encode_register,
    encode_reply,
    encode_status,
)
from wire.platform import (
    decode_events,
    decode_presence,
    decode_register,
    decode_reply,
    decode_status,
    encode_ack,
    encode_command,
)

EVENTS_VECTOR = (
    b'{"v": 1, "boot": 7, "ev": [[41, 1, 7, 1767225600, 250, 1, 0, "0011223344556677"],'
    b' [42, 33, 7, 5, 0, 0, 3, ""]]}'
)


def _raises(fn, *args):
    try:
        fn(*args)
    except common.ProtocolError as e:
        return e.reason
    raise AssertionError("accepted: %r" % (args,))


def test_topics():
    assert common.topic("hz.b12.d3", "events") == "door/v1/hz.b12.d3/events"
    assert common.split_topic("door/v1/hz.b12.d3/cmd") == ("hz.b12.d3", "cmd")
    assert common.split_topic(b"door/v1/x/ack") == ("x", "ack")
    assert _raises(common.split_topic, "door/v2/x/ack") == "bad_topic"
    assert _raises(common.split_topic, "door/v1/x+y/ack") == "bad_device_id"
    assert _raises(common.topic, "a/b", "events") == "bad_device_id"
    assert _raises(common.topic, "", "events") == "bad_device_id"


def test_topics_from_a_broker_that_makes_dots_levels():
    # RabbitMQ hands `door/v1/hz.b12.d3/cmd` back as `door/v1/hz/b12/d3/cmd`: the same door.
    assert common.split_topic("door/v1/hz/b12/d3/cmd") == ("hz.b12.d3", "cmd")
    assert (common.split_topic("door/v1/hz/b12/d3/presence")
            == common.split_topic("door/v1/hz.b12.d3/presence"))
    assert _raises(common.split_topic, "door/v1/a/b+c/ack") == "bad_device_id"
    assert _raises(common.split_topic, "door/v1/ack") == "bad_topic"
    assert common.filters("events") == ["door/v1/+/events", "door/v1/+/+/events",
                                   "door/v1/+/+/+/events", "door/v1/+/+/+/+/events"]
    assert common.ANNOUNCE_TOPIC == "door/v1/announce"


def test_events_vector_decodes():
    ev = decode_events(EVENTS_VECTOR)
    assert ev == [(41, 1, 7, 1767225600, 250, 1, 0, "0011223344556677"), (42, 33, 7, 5, 0, 0, 3, "")]


def test_events_round_trip():
    batch = [(1, 2, 3, 4, 5, 6, 7, "ab"), (2, 2, 3, 4, 5, 6, 7, "")]
    assert decode_events(encode_events(3, batch)) == batch


def test_events_rejections():
    assert _raises(decode_events, b"not json") == "not_json"
    assert _raises(decode_events, b"[1]") == "not_object"
    assert _raises(decode_events, b'{"v": 2, "boot": 1, "ev": []}') == "bad_version"
    assert _raises(decode_events, b'{"v": 1, "boot": 1, "ev": []}') == "bad_field"
    bad = [
        b'{"v": 1, "boot": 1, "ev": [[2, 1, 1, 1, 1, 1, 1, ""], [2, 1, 1, 1, 1, 1, 1, ""]]}',
        b'{"v": 1, "boot": 1, "ev": [[1, 1, 1, 1, 1, 1, 1]]}',
        b'{"v": 1, "boot": 1, "ev": [[1, 256, 1, 1, 1, 1, 1, ""]]}',
        b'{"v": 1, "boot": 1, "ev": [[1, 1, 1, 1, 1000, 1, 1, ""]]}',
        b'{"v": 1, "boot": 1, "ev": [[1, 1, 1, 1, 1, 1, 1, "XY"]]}',
        b'{"v": 1, "boot": 1, "ev": [[1, 1, 1, 1, 1, 1, 1, "abc"]]}',
        b'{"v": 1, "boot": 1, "ev": [[-1, 1, 1, 1, 1, 1, 1, ""]]}',
        b'{"v": 1, "boot": 1, "ev": [[true, 1, 1, 1, 1, 1, 1, ""]]}',
    ]
    for b in bad:
        assert _raises(decode_events, b) == "bad_event", b
    assert _raises(decode_events, bytearray(common.MAX_PAYLOAD + 1)) == "too_large"


def test_ack_vector_and_rejections():
    assert decode_ack(b'{"v": 1, "upto": 42}') == 42
    assert decode_ack(encode_ack(7)) == 7
    assert _raises(decode_ack, b'{"v": 1, "upto": "42"}') == "bad_field"
    assert _raises(decode_ack, b'{"v": 1, "upto": -1}') == "bad_field"
    assert _raises(decode_ack, b'{"v": 1}') == "bad_field"


def test_commands():
    raw = b'{"v": 1, "id": "c1", "op": "patrol"}'
    assert decode_command(raw) == ("c1", "patrol", {}, 0, "")
    cmd = decode_command(encode_command("c2", "open", {"door": 1}, 1767225600, "ab" * 16))
    assert cmd == ("c2", "open", {"door": 1}, 1767225600, "ab" * 16)
    assert _raises(decode_command, b'{"v": 1, "id": "c1", "op": "explode"}') == "unknown_command"
    assert _raises(decode_command, b'{"v": 1, "op": "patrol"}') == "bad_field"
    assert _raises(decode_command, b'{"v": 1, "id": "c", "op": "open", "args": []}') == "bad_field"


def test_time_presence_status_reply():
    assert decode_time(b'{"v": 1, "t": 1767225600123}') == 1767225600123
    assert _raises(decode_time, b'{"v": 1, "t": 5}') == "bad_field"
    assert decode_presence(encode_presence(False)) == {"v": 1, "online": False}
    pres = decode_presence(encode_presence(True, 3, "0.1.0"))
    assert pres["boot"] == 3 and pres["fw"] == "0.1.0"
    st = decode_status(encode_status({"seq": 9, "door": "closed"}))
    assert st["door"] == "closed"
    rep = decode_reply(encode_reply("c1", False, "expired"))
    assert rep["ok"] is False and rep["reason"] == "expired"


REGISTER_VECTOR = (
    b'{"v": 1, "site": 2024, "door": 3, "fw": "0.1.0", "lock": "fail-secure",'
    b' "cards": ["desfire_ev2", "legacy_uid"], "tls": true, "client_cert": false,'
    b' "commissioned_at": 1767225600}'
)


def test_register_vector_and_refusals():
    reg = decode_register(REGISTER_VECTOR)
    assert (reg["site"], reg["door"], reg["lock"], reg["cards"]) == (
        2024, 3, "fail-secure", ["desfire_ev2", "legacy_uid"])
    assert reg["tls"] is True and reg["client_cert"] is False
    assert reg["commissioned_at"] == 1767225600
    again = decode_register(encode_register(1, 0, "0.1.0", "fail-safe", ["desfire_ev2"],
                                                False, False, 0))
    assert again["lock"] == "fail-safe" and again["tls"] is False
    for old, new, field in ((b'"door": 3', b'"door": 16', "door"),
                            (b'"fail-secure"', b'"magnetic"', "lock"),
                            (b'"legacy_uid"', b'"plain_text"', "cards"),
                            (b'"tls": true', b'"tls": 1', "tls"),
                            (b'"fw": "0.1.0"', b'"fw": ""', "fw"),
                            (b'"site": 2024', b'"site": -1', "site")):
        bad = REGISTER_VECTOR.replace(old, new)
        assert bad != REGISTER_VECTOR
        try:
            decode_register(bad)
        except common.ProtocolError as e:
            assert e.reason == "bad_field" and field in str(e), (field, str(e))
        else:
            raise AssertionError("accepted: %r" % bad)
    assert _raises(decode_register, REGISTER_VECTOR.replace(b'"v": 1', b'"v": 2')) == "bad_version"


def test_cache_chunks_round_trip_and_bad_ones_are_refused():
    from wire import common
    from wire.door import decode_cache_chunk
    from wire.platform import encode_cache_chunk

    key = b"C" * 32
    msg = encode_cache_chunk(7, 20000, 8192, b"x" * 100, key)
    assert msg[:4] == b"DWU2" and len(msg) == common.CACHE_HDR + 100
    v, total, off, tag, data = decode_cache_chunk(msg)
    assert (v, total, off, bytes(data)) == (7, 20000, 8192, b"x" * 100)
    assert tag == common.cache_chunk_tag(key, 7, 20000, 8192, b"x" * 100)
    assert tag != common.cache_chunk_tag(key, 7, 20000, 8193, b"x" * 100)  # the offset is covered
    assert tag != common.cache_chunk_tag(b"D" * 32, 7, 20000, 8192, b"x" * 100)
    for bad in (b"", b"DWU2", b"XXXX" + msg[4:], encode_cache_chunk(7, 100, 90, b"y" * 20, key),
                encode_cache_chunk(7, 0, 0, b"", key), encode_cache_chunk(7, 10, 0, b"", key),
                encode_cache_chunk(7, 10 ** 8, 0, b"z", key),
                encode_cache_chunk(7, 100000, 0, b"z" * (common.CACHE_CHUNK_MAX + 1), key)):
        try:
            decode_cache_chunk(bad)
            raise AssertionError(bad[:20])
        except common.ProtocolError as e:
            assert e.reason in ("bad_chunk", "too_large")


def test_cache_state_round_trip():
    from wire import common
    from wire.door import encode_cache_state
    from wire.platform import decode_cache_state

    s = decode_cache_state(encode_cache_state(3, 4, 8192, "base_mismatch"))
    assert (s["version"], s["receiving"], s["have"], s["reason"]) == (3, 4, 8192, "base_mismatch")
    assert "reason" not in decode_cache_state(encode_cache_state(3))
    s = decode_cache_state(encode_cache_state(3, content="2763e668870a86ea"))
    assert s["hash"] == "2763e668870a86ea"
    assert "hash" not in decode_cache_state(encode_cache_state(3, content=None))
    for bad in ('"2763E668870A86EA"', '"2763e668"', "7", '"2763e668870a86eg"'):
        payload = b'{"v":1,"version":3,"receiving":0,"have":0,"hash":' + bad.encode() + b"}"
        try:
            decode_cache_state(payload)
            raise AssertionError(bad)
        except common.ProtocolError as e:
            assert e.reason == "bad_field"


def test_a_door_still_takes_the_2_kib_pieces_platforms_sent_before_1_kib():
    from wire import common
    from wire.door import decode_cache_chunk
    from wire.platform import encode_cache_chunk

    key = b"C" * 32
    assert common.CACHE_CHUNK == 1024 and common.CACHE_CHUNK_MAX == 2048
    old = encode_cache_chunk(7, 100000, 2048, b"o" * common.CACHE_CHUNK_MAX, key)
    assert len(old) == common.limit("cache")  # the MQTT layer takes it too
    v, total, off, tag, data = decode_cache_chunk(old)
    assert (v, total, off, len(data)) == (7, 100000, 2048, 2048)
