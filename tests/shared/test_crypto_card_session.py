# The door's card step against an in-process DESFire EV2-subset card. Same assertions
# under CPython and MicroPython. The card simulator is host code imported from source
# (compiled at import), hence the larger heap; the door side alone runs in 64K
# (test_crypto_keystore.py, and the card.auth_ms benchmark).
# mpy-heapsize: 256K
from crypto import aes
from crypto.keystore import SoftwareKeyStore
from card_reader import card_session as cs
from wire import card_profile as profile
from host_tools.cards.desfire import DesfireCard, blank_state

H = bytes.fromhex
UID = H("04112233445566")
IDENT = H("00112233445566778899aabbccddeeff")


def store(site=7, seed=1):
    keys = {
        "app_master": bytes([seed]) * 16,
        "door_read": bytes([seed + 1]) * 16,
        "card_ref": bytes([seed + 2]) * 32,
        "classic_a": H("ffffffffffff"),
    }
    return SoftwareKeyStore(site, b"DOOR" + site.to_bytes(4, "big"), keys)


def issued(ks, uid=UID, site=None, ident=IDENT):
    """A card in the state the personalizer leaves it in."""
    state = blank_state(uid)
    aid = profile.DOOR_AID
    state["apps"][aid.hex()] = {
        "key_settings": 0x0B,
        "keys": [ks.derive_card_key(uid, aid, "app_master").hex(),
                 ks.derive_card_key(uid, aid, "door_read").hex()],
        "key_versions": [1, 1],
        "files": {"1": {"comm": 1, "access": "0010",
                        "data": profile.encode_credential(ks.site_id if site is None else site,
                                                          ident).hex()}},
    }
    return DesfireCard(state)


def test_credential_round_trip():
    c = profile.encode_credential(0x01020304, IDENT)
    assert len(c) == profile.CRED_LEN and c[:3] == b"DR\x01" and c[3:7] == H("01020304")
    assert profile.decode_credential(c) == (0x01020304, IDENT)
    assert profile.decode_credential(b"XX" + c[2:]) is None


def test_good_card_gives_reference():
    ks = store()
    aes.reset_blocks()
    r = cs.CardSession(ks).read(issued(ks).process, UID, 0x20)
    assert r.ok and r.reason == "ok" and r.profile == "desfire_ev2" and not r.low_assurance
    assert r.ref == profile.desfire_ref(ks, 7, IDENT) and len(r.ref) == 8
    assert aes.blocks() > 0


def test_reference_is_stable_and_keyed():
    ks = store()
    a = cs.CardSession(ks).read(issued(ks).process, UID, 0x20).ref
    b = cs.CardSession(ks).read(issued(ks).process, UID, 0x20).ref
    assert a == b
    other = store(seed=50)
    assert profile.desfire_ref(other, 7, IDENT) != a


def test_clone_with_same_uid_fails_authentication():
    ks = store()
    clone = issued(store(seed=90), UID)  # same UID and layout, keys the cloner does not have
    r = cs.CardSession(ks).read(clone.process, UID, 0x20)
    assert not r.ok and r.reason == "auth_failed" and r.ref is None


def test_card_of_another_site_fails():
    ks = store()
    other = store(site=8, seed=30)
    r = cs.CardSession(ks).read(issued(other).process, UID, 0x20)
    assert r.reason == "auth_failed"


def test_credential_of_another_site_is_refused():
    ks = store()
    r = cs.CardSession(ks).read(issued(ks, site=9).process, UID, 0x20)
    assert r.reason == "wrong_site"


def test_uid_must_match_the_card():
    ks = store()
    card = issued(ks)
    card.state["uid"] = "04aabbccddeeff"  # keys for UID, but the chip reports another UID
    r = cs.CardSession(ks).read(card.process, UID, 0x20)
    assert r.reason == "uid_mismatch"


def test_blank_card_is_not_a_door_card():
    ks = store()
    blank = DesfireCard(blank_state(UID))
    assert cs.CardSession(ks).read(blank.process, UID, 0x20).reason == "not_door_card"


def test_tampered_read_response_is_refused():
    ks = store()
    card = issued(ks)

    def tamper(apdu):
        resp = card.process(apdu)
        if apdu[1] == 0xAD:
            resp = bytes([resp[0] ^ 1]) + resp[1:]
        return resp

    assert cs.CardSession(ks).read(tamper, UID, 0x20).reason == "bad_mac"


def test_card_pulled_mid_authentication():
    ks = store()
    card = issued(ks)

    def pulled(apdu):
        if apdu[1] == 0xAF:
            raise OSError("card left the field")
        return card.process(apdu)

    r = cs.CardSession(ks).read(pulled, UID, 0x20)
    assert r.reason == "card_lost" and r.code == cs.CARD_LOST


def test_legacy_profiles_off_by_default():
    ks = store()
    assert cs.CardSession(ks).read(lambda a: b"", H("11223344"), 0x08).reason == "unsupported_card"
    r = cs.CardSession(ks, legacy_uid=True).read(lambda a: b"", H("11223344"), 0x08)
    assert r.ok and r.low_assurance and r.profile == "uid" and r.ref == profile.uid_ref(ks, H("11223344"))
    # a DESFire card without the door application falls back only when enabled
    blank = DesfireCard(blank_state(UID))
    r = cs.CardSession(ks, legacy_uid=True).read(blank.process, UID, 0x20)
    assert r.ok and r.low_assurance and r.ref != cs.CardSession(ks).read(issued(ks).process, UID, 0x20).ref


def test_legacy_classic_block_read():
    ks = store()
    block = H("000102030405060708090a0b0c0d0e0f")
    sent = []

    def classic(cmd):
        sent.append(bytes(cmd))
        if cmd[0] == 0x60:
            assert cmd[2:8] == H("ffffffffffff") and cmd[8:] == H("11223344")
            return b""
        return block

    r = cs.CardSession(ks, legacy_classic=True).read(classic, H("11223344"), 0x08)
    assert r.ok and r.low_assurance and r.profile == "classic" and r.ref == profile.classic_ref(ks, block)
    assert sent[1] == b"\x30\x04"


def test_async_transceive():
    import asyncio

    ks = store()
    card = issued(ks)

    async def exchange(apdu):
        await asyncio.sleep(0)
        return card.process(apdu)

    r = asyncio.run(cs.CardSession(ks).read_async(exchange, UID, 0x20))
    assert r.ok and r.ref == profile.desfire_ref(ks, 7, IDENT)


def test_steps_generator_yields_apdus():
    ks = store()
    card = issued(ks)
    gen = cs.CardSession(ks).steps(UID, 0x20)
    apdu = next(gen)
    assert apdu == b"\x90\x5a\x00\x00\x03" + profile.DOOR_AID + b"\x00"
    try:
        while True:
            apdu = gen.send(card.process(apdu))
    except StopIteration as e:
        assert e.value.ok
