# mpy-heapsize: 96K
# The event args a door journals for a refused whitelist update and a refused command, and
# the broker's CONNACK refusals: the numbers docs/protocol.md gives (these tables are tuples
# frozen into the image, so a reason's number is its place: an insertion would renumber).
# Runs under CPython and MicroPython.
from firmware.cache_sync import reject_code as cache_reject_code
from firmware.commands import reject_code as command_reject_code
from firmware.mqtt import connack_reason

# docs/protocol.md, event 44 cache_rejected
CACHE_REJECTED = {"bad_tag": 1, "stale_version": 2, "base_mismatch": 3, "malformed": 4,
                  "wrong_site": 5, "storage": 6, "bad_chunk": 7, "no_cache_key": 8, "no_room": 9}
# docs/protocol.md, "Commands": command_rejected's arg
COMMAND_REJECTED = {"bad_mac": 1, "expired": 2, "not_yet_valid": 3, "stale": 4, "replay": 5,
                    "clock_unset": 6, "no_keys": 7, "busy": 8, "bad_field": 9, "out_of_range": 10,
                    "lockdown": 11, "bad_mode": 12, "unknown_command": 13, "no_door": 14,
                    "key_generation": 15, "key_scope": 16}


def test_cache_rejected_args():
    for reason, code in CACHE_REJECTED.items():
        assert cache_reject_code(reason) == code, reason
    assert cache_reject_code("something_new") == 99
    assert cache_reject_code("") == 99


def test_command_rejected_args():
    for reason, code in COMMAND_REJECTED.items():
        assert command_reject_code(reason) == code, reason
        assert command_reject_code(reason + ":detail") == code, reason
    assert command_reject_code("out_of_range:unlock_ms") == 10
    assert command_reject_code("something_new") == 99


def test_connack_reasons():
    assert connack_reason(1) == "unacceptable protocol version"
    assert connack_reason(2) == "client id rejected"
    assert connack_reason(3) == "server unavailable"
    assert connack_reason(4) == "bad user name or password"
    assert connack_reason(5) == "not authorised"
    assert connack_reason(0) == "0"
    assert connack_reason(6) == "6"
    assert connack_reason(200) == "200"
