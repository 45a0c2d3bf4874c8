# Protocol limits (size per topic, nesting) and the signed time, on both interpreters.
from firmware import protocol as p


def _raises(fn, *args):
    try:
        fn(*args)
    except p.ProtocolError as e:
        return e.reason
    raise AssertionError("accepted: %r" % (args,))


def test_nesting_and_length_are_bounded_before_parsing():
    assert _raises(p.decode_ack, b'{"v": 1, "upto": ' + b"[" * 60 + b"]" * 60 + b"}") == "too_deep"
    assert _raises(p.decode_ack, b'{"v": 1, "upto": ' + b"[" * 600 + b"]" * 600 + b"}") == "too_large"
    assert _raises(p.decode_command, b'{"v": 1, "id": "' + b"x" * 2100 + b'"}') == "too_large"
    # brackets inside strings, escaped quotes included, do not count
    ok = b'{"v": 1, "id": "[[[[[[\\"]]]]", "op": "patrol", "args": {"a": [[1]]}}'
    assert p.decode_command(ok)[0] == '[[[[[[\"]]]]'
    p.check_shape(b'[[[[1]]]]')
    assert _raises(p.check_shape, b'[[[[[1]]]]]') == "too_deep"
    assert p.limit("cmd") == 2048 and p.limit("cache") == p.CACHE_HDR + p.CACHE_CHUNK
    assert p.limit("nonsense") == 0


def test_signed_time_vector():
    payload = (b'{"v": 1, "t": 1767225600123, "nonce": "00112233445566aa", "mac": "'
               + b"ab" * 32 + b'"}')
    assert p.decode_signed_time(payload) == (1767225600123, "00112233445566aa", "ab" * 32)
    assert p.decode_signed_time(p.encode_time(1767225600123)) == (1767225600123, "", "")
    assert p.time_signing_bytes("hz.b1.d3", "00112233445566aa", 1767225600123) == \
        b"door-time/v1|8:hz.b1.d316:00112233445566aa1767225600123"
    assert p.decode_presence(p.encode_presence(True, 7, "0.1", "00112233445566aa"))["nonce"] == \
        "00112233445566aa"
    assert _raises(p.decode_presence, b'{"v": 1, "online": true, "nonce": "XYZ"}') == "bad_field"
