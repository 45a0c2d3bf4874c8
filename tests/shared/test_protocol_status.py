# A status report, the door's largest JSON message, is handed to the MQTT client as its UTF-8
# bytes: on MicroPython a view of the JSON string itself, so no ~500-byte copy is asked of a
# busy heap (at 68 KiB the report's .encode() copy was what a patrol failed on).
from wire.door import encode_status
from wire.platform import decode_status
def test_a_status_report_is_its_utf8_bytes_without_a_copy_on_micropython():
    import sys

    report = {"seq": 9, "door": "closed", "reader": "erreur: lecteur d\u00e9branch\u00e9"}
    payload = encode_status(report)
    raw = bytes(payload)
    # The length a publish puts in its header is that of the bytes sent, not of the characters.
    assert len(payload) == len(raw)
    assert decode_status(payload)["reader"] == report["reader"]
    if sys.implementation.name == "micropython":
        assert isinstance(payload, memoryview)  # the string's own bytes: no second ~500-byte copy
        assert len(raw) == len(raw.decode()) + 2  # two characters of two bytes each, unescaped


def test_a_status_report_written_into_the_uplinks_buffer_is_the_same_message():
    # The uplink writes the report into its events buffer (no string of the report's size
    # asked of a fragmented heap); the bytes are those of the string, on either interpreter.
    report = {"seq": 9, "door": "closed", "alarms": ["held_open"], "link": {"state": "up"},
              "reader": "erreur: lecteur d\u00e9branch\u00e9", "cache_hash": None, "key_gen": 3}
    want = bytes(encode_status(report))
    buf = bytearray(len(want) + 40)
    got = encode_status(report, buf)
    assert bytes(got) == want
    buf[0:1] = b"#"
    assert bytes(got)[:1] == b"#"  # a view of the buffer itself: nothing copied to the heap
    # A buffer too small for it: the message is made as a string, the same bytes.
    small = bytearray(len(want) - 1)
    assert bytes(encode_status(report, small)) == want


def test_dumps_into_fits_to_the_byte_and_says_none_past_it():
    from wire.common import dumps, dumps_into

    obj = {"v": 1, "ev": [[1, 2, "x\"y"]], "ok": True}
    want = dumps(obj)
    assert bytes(dumps_into(bytearray(len(want)), obj)) == want
    assert dumps_into(bytearray(len(want) - 1), obj) is None
    assert dumps_into(bytearray(0), obj) is None
