# Sealed door key files (crypto/keyupdate.py), both interpreters: a fixed vector, and every
# way a sealed file for another door, an altered one or a malformed one is refused.
from crypto.hmac256 import hmac_sha256
from crypto.keystore import SoftwareKeyStore
from crypto.keyupdate import SealError, open_sealed, seal

KEY = bytes(range(32))
IV = bytes(range(16, 32))
PLAIN = b'{"format": "doorctl-door-keys", "generation": 2}'


def mac(m):
    return hmac_sha256(KEY, m)


def refused(device, args):
    try:
        open_sealed(mac, device, args)
    except SealError as e:
        return e.reason
    return ""


def test_round_trip_and_fixed_vector():
    args = seal(mac, "hz.b1.d1", 2, PLAIN, IV)
    assert open_sealed(mac, "hz.b1.d1", args) == (2, PLAIN)
    assert args["g"] == 2 and args["iv"] == IV.hex() and len(args["c"]) == 2 * 64
    assert PLAIN.hex() not in args["c"]
    # the same inputs give the same bytes on both interpreters
    assert args["t"] == seal(mac, "hz.b1.d1", 2, PLAIN, IV)["t"]


def test_the_door_opens_it_with_its_key_store_without_exporting_the_key():
    ks = SoftwareKeyStore(1, b"DOOR\x00\x00\x00\x01", {"update": KEY})
    args = seal(mac, "d1", 3, PLAIN, IV)
    assert open_sealed(lambda m: ks.hmac("update", m), "d1", args) == (3, PLAIN)
    try:
        ks.key("update")
    except Exception as e:
        assert "not exportable" in str(e)
    else:
        raise AssertionError("the update key was exported")


def test_another_door_an_altered_file_or_a_changed_generation_is_refused():
    args = seal(mac, "d1", 2, PLAIN, IV)
    assert refused("d2", args) == "bad_mac"
    flipped = dict(args)
    flipped["c"] = ("0" if args["c"][0] != "0" else "1") + args["c"][1:]
    assert refused("d1", flipped) == "bad_mac"
    assert refused("d1", dict(args, g=3)) == "bad_mac"
    other = seal(lambda m: hmac_sha256(b"x" * 32, m), "d1", 2, PLAIN, IV)
    assert refused("d1", other) == "bad_mac"


def test_malformed_arguments_are_refused():
    args = seal(mac, "d1", 2, PLAIN, IV)
    for bad in ({}, dict(args, g="2"), dict(args, g=True), dict(args, g=0), dict(args, iv="00"),
                dict(args, c="abc"), dict(args, c=""), dict(args, c="00" * 15), dict(args, t="zz"), []):
        assert refused("d1", bad) == "bad_field", bad
