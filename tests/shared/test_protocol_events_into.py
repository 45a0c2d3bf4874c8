# The door's events message written into its own buffer decodes as the one built as a JSON
# string (both interpreters); what does not fit or needs escaping is left to encode_events.
from wire.door import encode_events, encode_events_into
from wire.platform import decode_batch

EVENTS = [[1, 10, 3, 1733222400, 250, 1, 0, ""],
          [2, 11, 3, 1733222401, 999, 0x11, 65535, "00ff" * 6],
          [4294967295, 255, 65535, 4294967295, 0, 0, 7, "a1"]]


def _buf(n=2048):
    return bytearray(b"\xee" * n)


def test_same_batch_as_encode_events():
    for events, gone in ((EVENTS, None), (EVENTS, (5, 9)), ([], (1, 2)), (EVENTS[:1], None)):
        buf = _buf()
        n = encode_events_into(buf, 3, events, gone)
        assert n > 0
        want = decode_batch(encode_events(3, events, gone))
        assert decode_batch(bytes(buf[:n])) == want
        assert buf[n] == 0xEE  # nothing written past the payload


def test_too_small_a_buffer_is_refused_not_overrun():
    full = encode_events_into(_buf(), 3, EVENTS)
    for size in (0, 10, full - 1):
        buf = _buf(size + 4)
        assert encode_events_into(memoryview(buf)[:size], 3, EVENTS) == -1
        assert buf[size:] == b"\xee" * 4
    assert encode_events_into(_buf(full), 3, EVENTS) == full


def test_what_json_would_escape_or_non_ints_are_left_to_encode_events():
    for bad in ([1, 10, 3, 5, 0, 0, 0, 'a"b'], [1, 10, 3, 5, 0, 0, 0, "a\\b"],
                [1, 10, 3, 5, 0, 0, 0, "\n"], [1, 10, 3, 5.5, 0, 0, 0, "ab"],
                [1, 10, 3, None, 0, 0, 0, "ab"], [1, 10, 3, 5, 0, 0, 0]):
        assert encode_events_into(_buf(), 3, [bad]) == -1
