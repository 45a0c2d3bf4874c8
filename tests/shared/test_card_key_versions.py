# Key rotation at the door (both interpreters): the card's key version picks the door read
# master, both versions are accepted during a rotation window, the door moves a card to the
# current version where the site allows it and the card's ChangeKey right permits, and a
# retired version (a clone made with a stolen door's old key included) is refused.
# mpy-heapsize: 256K
from crypto.keystore import SoftwareKeyStore
from card_reader import card_session as cs
from wire import card_profile as profile
from host_tools.cards.desfire import DesfireCard, blank_state

H = bytes.fromhex
UID = H("04112233445566")
IDENT = H("00112233445566778899aabbccddeeff")
SITE = 7
MASTERS = {"app_master": b"\x01" * 16, "door_read": b"\x02" * 16,
           "app_master.2": b"\x11" * 16, "door_read.2": b"\x12" * 16, "card_ref": b"\x03" * 32}


def door(accept=(1, 2), current=2, rekey=True):
    keys = {k: v for k, v in MASTERS.items() if not k.startswith("app_master")}
    return SoftwareKeyStore(SITE, b"DOOR" + SITE.to_bytes(4, "big"), keys, current, accept, rekey)


def issuing(version):
    return SoftwareKeyStore(SITE, b"DOOR" + SITE.to_bytes(4, "big"), MASTERS, version)


def card(version=1, change_right=0xE0, masters=None):
    """A door card as `doorctl card personalize` leaves it, on key version `version`."""
    ks = issuing(version)
    aid = profile.DOOR_AID
    sfx = "" if version == 1 else ".%d" % version
    state = blank_state(UID)
    keys = masters or [ks.derive_card_key(UID, aid, "app_master" + sfx),
                       ks.derive_card_key(UID, aid, "door_read" + sfx)]
    state["apps"][aid.hex()] = {
        "key_settings": change_right | 0x0B,
        "keys": [k.hex() for k in keys],
        "key_versions": [version, version],
        "files": {"1": {"comm": 1, "access": "0010", "data": profile.encode_credential(SITE, IDENT).hex()}},
    }
    return DesfireCard(state)


def key1(c):
    app = c.state["apps"][profile.DOOR_AID.hex()]
    return bytes.fromhex(app["keys"][1]), app["key_versions"][1]


def test_both_versions_are_accepted_during_the_window_and_the_door_knows_which():
    ks = door(rekey=False)
    for v in (1, 2):
        r = cs.CardSession(ks).read(card(v).process, UID, 0x20)
        assert r.ok and r.key_version == v and not r.rekeyed
        assert r.ref == profile.desfire_ref(ks, SITE, IDENT)  # same reference on either version


def test_the_door_moves_a_card_to_the_current_version_at_its_next_swipe():
    ks = door()
    c = card(1)
    r = cs.CardSession(ks).read(c.process, UID, 0x20)
    assert r.ok and r.rekeyed and r.key_version == 2
    new = issuing(2).derive_card_key(UID, profile.DOOR_AID, "door_read.2")
    assert key1(c) == (new, 2)
    again = cs.CardSession(ks).read(c.process, UID, 0x20)
    assert again.ok and again.key_version == 2 and not again.rekeyed and again.ref == r.ref


def test_a_card_whose_keys_only_the_master_may_change_is_left_as_it_is():
    ks = door()
    c = card(1, change_right=0x00)
    before = key1(c)
    r = cs.CardSession(ks).read(c.process, UID, 0x20)
    assert r.ok and not r.rekeyed and r.key_version == 1 and key1(c) == before


def test_no_rekey_where_the_site_does_not_allow_it():
    c = card(1)
    before = key1(c)
    assert cs.CardSession(door(rekey=False)).read(c.process, UID, 0x20).ok
    assert key1(c) == before


def test_after_the_window_the_old_version_is_refused():
    ks = door(accept=(2,))
    r = cs.CardSession(ks).read(card(1).process, UID, 0x20)
    assert not r.ok and r.reason == "key_retired" and r.code == cs.KEY_RETIRED and r.ref is None
    assert cs.CardSession(ks).read(card(2).process, UID, 0x20).ok


def test_a_clone_made_with_a_stolen_doors_old_key():
    """The thief knows door_read (version 1) and copied UID and credential: the clone passes
    while version 1 is accepted, and is refused once the window closes. Claiming version 2
    with the old key fails authentication."""
    thief = SoftwareKeyStore(SITE, b"DOOR" + SITE.to_bytes(4, "big"),
                             {"door_read": MASTERS["door_read"], "card_ref": MASTERS["card_ref"]})
    k1 = thief.derive_card_key(UID, profile.DOOR_AID, "door_read")
    clone = card(1, masters=[b"\x55" * 16, k1])
    assert cs.CardSession(door(rekey=False)).read(clone.process, UID, 0x20).ok  # the window's risk
    assert cs.CardSession(door(accept=(2,))).read(clone.process, UID, 0x20).reason == "key_retired"
    posing = card(1, masters=[b"\x55" * 16, k1])
    posing.state["apps"][profile.DOOR_AID.hex()]["key_versions"] = [2, 2]
    assert cs.CardSession(door(accept=(2,))).read(posing.process, UID, 0x20).reason == "auth_failed"


def test_a_key_store_without_versions_reads_version_1_cards():
    ks = SoftwareKeyStore(SITE, b"DOOR" + SITE.to_bytes(4, "big"),
                          {"door_read": MASTERS["door_read"], "card_ref": MASTERS["card_ref"]})
    assert ks.key_version == 1 and ks.accept == (1,)
    assert cs.CardSession(ks).read(card(1).process, UID, 0x20).ok
    assert cs.CardSession(ks).read(card(2).process, UID, 0x20).reason == "key_retired"
