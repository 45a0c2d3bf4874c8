# Protocol limits (size per topic, nesting) and the signed time, on both interpreters.
from wire import common
from wire.door import decode_ack, decode_command, decode_signed_time, encode_presence
from wire.platform import decode_presence, encode_time


def _raises(fn, *args):
    try:
        fn(*args)
    except common.ProtocolError as e:
        return e.reason
    raise AssertionError("accepted: %r" % (args,))


def test_nesting_and_length_are_bounded_before_parsing():
    assert _raises(decode_ack, b'{"v": 1, "upto": ' + b"[" * 60 + b"]" * 60 + b"}") == "too_deep"
    assert _raises(decode_ack, b'{"v": 1, "upto": ' + b"[" * 600 + b"]" * 600 + b"}") == "too_large"
    assert _raises(decode_command, b'{"v": 1, "id": "' + b"x" * 2100 + b'"}') == "too_large"
    # brackets inside strings, escaped quotes included, do not count
    ok = b'{"v": 1, "id": "[[[[[[\\"]]]]", "op": "patrol", "args": {"a": [[1]]}}'
    assert decode_command(ok)[0] == '[[[[[[\"]]]]'
    common.check_shape(b'[[[[1]]]]')
    assert _raises(common.check_shape, b'[[[[[1]]]]]') == "too_deep"
    assert common.limit("cmd") == 2048 and common.limit("cache") == common.CACHE_HDR + common.CACHE_CHUNK_MAX
    assert common.limit("nonsense") == 0


def test_signed_time_vector():
    payload = (b'{"v": 1, "t": 1767225600123, "nonce": "00112233445566aa", "mac": "'
               + b"ab" * 32 + b'"}')
    assert decode_signed_time(payload) == (1767225600123, "00112233445566aa", "ab" * 32)
    assert decode_signed_time(encode_time(1767225600123)) == (1767225600123, "", "")
    assert common.time_signing_bytes("hz.b1.d3", "00112233445566aa", 1767225600123) == \
        b"door-time/v1|8:hz.b1.d316:00112233445566aa1767225600123"
    assert decode_presence(encode_presence(True, 7, "0.1", "00112233445566aa"))["nonce"] == \
        "00112233445566aa"
    assert _raises(decode_presence, b'{"v": 1, "online": true, "nonce": "XYZ"}') == "bad_field"
