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
