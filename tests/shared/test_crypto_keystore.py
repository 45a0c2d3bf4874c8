# Key store and HMAC-SHA256 (RFC 4231 test cases 1 and 2), both interpreters, 64K heap.
from crypto.keystore import KeyStoreError, SoftwareKeyStore, hmac_sha256

H = bytes.fromhex


def store():
    return SoftwareKeyStore(7, b"DOOR\x00\x00\x00\x07", {
        "app_master": b"\x01" * 16, "door_read": b"\x02" * 16, "card_ref": b"\x03" * 32})


def test_hmac_sha256_rfc4231_case1():
    assert hmac_sha256(b"\x0b" * 20, b"Hi There") == H(
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")


def test_hmac_sha256_rfc4231_case2():
    assert hmac_sha256(b"Jefe", b"what do ya want for nothing?") == H(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_keystore_hides_keys():
    ks = store()
    text = repr(ks) + str(ks)
    assert "0101" not in text and "hidden" in text
    for slot in ("app_master", "door_read", "card_ref"):
        try:
            ks.key(slot)
        except KeyStoreError:
            continue
        raise AssertionError("exported " + slot)


def test_keystore_from_dict_rejects_short_key():
    try:
        SoftwareKeyStore.from_dict({"site_id": 1, "system_id": "00", "keys": {"door_read": "0011"}})
    except KeyStoreError as e:
        assert "0011" not in str(e)
        return
    raise AssertionError("short key accepted")


def test_diversified_card_keys_differ_per_uid_and_slot():
    ks = store()
    aid = b"\x01\xd0\xf5"
    a = ks.derive_card_key(H("04112233445566"), aid, "door_read")
    assert len(a) == 16
    assert a != ks.derive_card_key(H("04112233445567"), aid, "door_read")
    assert a != ks.derive_card_key(H("04112233445566"), aid, "app_master")
    assert ks.card_ref(b"x") != ks.card_ref(b"y") and len(ks.card_ref(b"x")) == 8


def test_keystore_scope_names_its_door():
    base = {"site_id": 1, "system_id": "00", "keys": {"command": "11" * 32}}
    assert SoftwareKeyStore.from_dict(base).scope == "site"
    door = SoftwareKeyStore.from_dict(dict(base, scope="door", device="hz.b1.d1"))
    assert door.scope == "door" and door.device == "hz.b1.d1" and "scope=door" in repr(door)
    assert "1111" not in repr(door)
    for bad in ({"scope": "door"}, {"scope": "room", "device": "x"}, {"device": "x"}):
        try:
            SoftwareKeyStore.from_dict(dict(base, **bad))
        except KeyStoreError as e:
            assert "scope" in str(e)
            continue
        raise AssertionError("accepted " + repr(bad))
