# The virtual card (host_tools/cards/desfire.py) as a spec-strict EV2 card: fed NXP's
# published C-APDUs it must give NXP's published R-APDUs byte for byte, and it must refuse
# what a real card refuses (a missing command MAC with 91 7E, a wrong one with 91 1E,
# ending the session). Vectors: NXP AN12196 rev. 2.0 (NTAG 424 DNA features and hints;
# same EV2 secure messaging as DESFire EV2): Table 14 AuthenticateEV2First, Tables 19/23
# session keys, Table 21 WriteData in CommMode.Full, Tables 25/26 ChangeKey, Table 28
# GetCardUID. (AN12343 was not at hand; AN12196's tables cover the same messages.)
# Same vectors under CPython and MicroPython.
# mpy-heapsize: 256K
from crypto import ev2
from crypto.ev2 import CardError, Reader, SecureChannel
from card_reader import card_session as cs
from wire import card_profile as profile
from host_tools.cards.desfire import DesfireCard, blank_state

H = bytes.fromhex
ZERO = bytes(16)

# AN12196 Table 14
T14_RNDA = H("13C5DB8A5930439FC3DEF9A4C675360F")
T14_RNDB = H("B9E2FC789B64BF237CCCAA20EC7E6E48")
T14_TI = H("9D00C4DF")

# AN12196 Table 28 (GetCardUID): session of that table, CmdCtr 0
T28_TI = H("DF055522")
T28_ENC = H("2B4D963C014DC36F24F69A50A394F875")
T28_MAC = H("379D32130CE61705DD5FD8C36B95D764")
T28_UID = H("04958CAA5C5E80")
T28_CMD = H("90510000088E2C155ADDA99BE300")
T28_RESP = H("70756055688505B52A5E26E59E329CD6595F672298EA41B79100")

# AN12196 Tables 23, 25, 26 (ChangeKey after AuthenticateEV2NonFirst, TI of Table 19)
T23_TI = H("7614281A")
T23_ENC = H("4CF3CB41A22583A61E89B158D252FC53")
T23_MAC = H("5529860B2FC5FB6154B7F28361D30BF9")
T25_NEW = H("F3847D627727ED3BC9C4CC050489B966")
T25_CMD = H("90C4000029022CF362B7BF4311FF3BE1DAA295E8C68DE09050560D19B9E16C2393AE9CD1FAC7"
            "5D0CE20BCD1D06E600")
T25_RESP = H("203BB55D1089D5879100")
T26_NEW = H("5004BF991F408672B1EF00F08F9E8647")
T26_CMD = H("90C400002900C0EB4DEEFEDDF0B513A03A95A75491818580503190D4D05053FF75668A01D6FDA6"
            "610234BDED643200")

# AN12196 Tables 19 and 21 (WriteData, CommMode.Full, key 3)
T19_ENC = H("7A93D6571E4B180FCA6AC90C9A7488D4")
T19_MAC = H("FC4AF159B62E549B5812394CAB1918CC")
T21_CMD = H("908D00001F030000000A00006B5E6804909962FC4E3FF5522CF0F8436C0C53315B9C73AA00")
T21_RESP = H("C26D236E4A7C046D9100")

APP = "112233"


class Rng:
    """The card's random source replaying the published RndB, then TI."""

    def __init__(self, *values):
        self.values = list(values)

    def __call__(self, n):
        v = self.values.pop(0)
        assert len(v) == n
        return v


def card_in_session(uid, ti, enc, mac, ctr=0, key_no=0, keys=3, files=None, rng=None):
    """A card with application 112233 selected and a session as a published table has it."""
    state = blank_state(uid)
    state["apps"][APP] = {"key_settings": 0x0F, "keys": [ZERO.hex()] * keys,
                          "key_versions": [0] * keys, "files": files or {}}
    card = DesfireCard(state, rng=rng)
    card.aid = APP
    card.channel = SecureChannel(ti, enc, mac)
    card.channel.cmd_ctr = ctr
    card.auth_key_no = key_no
    return card


def test_authenticate_ev2_first_table14_card_side():
    card = DesfireCard(blank_state(H("04112233445566")), rng=Rng(T14_RNDB, T14_TI))
    assert card.process(H("9071000002000000")) == H("A04C124213C186F22399D33AC2A30215") + b"\x91\xaf"
    part2 = H("35C3E05A752E0144BAC0DE51C1F22C56B34408A23D8AEA266CAB947EA8E0118D")
    resp = card.process(H("90AF000020") + part2 + b"\x00")
    assert resp == H("3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F08120663") + b"\x91\x00"
    assert card.channel.ti == T14_TI and card.channel.cmd_ctr == 0
    # the session keys the card derived are Table 14's: its IVc is the reader's
    reader_side = SecureChannel(T14_TI, H("1309C877509E5A215007FF0ED19CA564"),
                                H("4C6626F5E72EA694202139295C7A7FC7"))
    assert card.channel.iv_cmd() == reader_side.iv_cmd()


def test_get_card_uid_table28_card_side():
    card = card_in_session(T28_UID, T28_TI, T28_ENC, T28_MAC)
    assert card.process(T28_CMD) == T28_RESP
    assert card.channel.cmd_ctr == 1 and card.channel.ti == T28_TI


def test_get_card_uid_table28_reader_side():
    sent = []

    def card(apdu):
        sent.append(bytes(apdu))
        return T28_RESP

    r = Reader(card)
    r.channel = SecureChannel(T28_TI, T28_ENC, T28_MAC)
    assert r.get_card_uid() == T28_UID
    assert sent == [T28_CMD] and r.channel.cmd_ctr == 1


def test_get_card_uid_without_mac_is_a_length_error_and_ends_the_session():
    card = card_in_session(T28_UID, T28_TI, T28_ENC, T28_MAC)
    assert card.process(H("9051000000")) == b"\x91\x7e"  # the EV1 form
    assert card.channel is None
    # the command that would have been right is refused too: there is no session left
    assert card.process(T28_CMD)[-2:] != b"\x91\x00"


def test_get_card_uid_with_wrong_or_zero_mac_is_an_integrity_error():
    for mac in (bytes(8), H("8E2C155ADDA99BE2")):
        card = card_in_session(T28_UID, T28_TI, T28_ENC, T28_MAC)
        assert card.process(H("9051000008") + mac + b"\x00") == b"\x91\x1e"
        assert card.channel is None


def test_replayed_command_mac_is_refused():
    """CmdCtr is part of the MAC: the same C-APDU a second time does not verify."""
    card = card_in_session(T28_UID, T28_TI, T28_ENC, T28_MAC)
    assert card.process(T28_CMD) == T28_RESP
    assert card.process(T28_CMD) == b"\x91\x1e" and card.channel is None


def test_change_key_tables25_26_card_side():
    card = card_in_session(H("04112233445566"), T23_TI, T23_ENC, T23_MAC, ctr=2)
    assert card.process(T25_CMD) == T25_RESP
    app = card.state["apps"][APP]
    assert app["keys"][2] == T25_NEW.hex() and app["key_versions"][2] == 1
    assert card.channel.cmd_ctr == 3
    assert card.process(T26_CMD) == b"\x91\x00"
    assert app["keys"][0] == T26_NEW.hex() and app["key_versions"][0] == 1
    assert card.channel is None  # changing the key in use ends the session


def test_change_key_with_a_wrong_mac_changes_nothing():
    card = card_in_session(H("04112233445566"), T23_TI, T23_ENC, T23_MAC, ctr=2)
    bad = bytearray(T25_CMD)
    bad[-2] ^= 0x01
    assert card.process(bytes(bad)) == b"\x91\x1e"
    assert card.state["apps"][APP]["keys"][2] == ZERO.hex() and card.channel is None


def test_write_data_full_table21_card_side():
    files = {"3": {"comm": 3, "access": "3033", "data": bytes(128).hex()}}
    card = card_in_session(H("04112233445566"), T23_TI, T19_ENC, T19_MAC, key_no=3, keys=4,
                           files=files)
    assert card.process(T21_CMD) == T21_RESP
    assert bytes.fromhex(files["3"]["data"])[:12] == H("0102030405060708090A0000")
    assert card.channel.cmd_ctr == 1


def test_write_data_full_table21_reader_side():
    sent = []

    def card(apdu):
        sent.append(bytes(apdu))
        return T21_RESP

    r = Reader(card)
    r.channel = SecureChannel(T23_TI, T19_ENC, T19_MAC)
    r.write_data(3, 0, H("0102030405060708090A"), Reader.MODE_FULL)
    assert sent == [T21_CMD] and r.channel.cmd_ctr == 1


# --- the door's flow against the strict card ---------------------------------------------

UID = H("04112233445566")
IDENT = H("00112233445566778899aabbccddeeff")


def store():
    from crypto.keystore import SoftwareKeyStore

    keys = {"app_master": b"\x01" * 16, "door_read": b"\x02" * 16, "card_ref": b"\x03" * 32}
    return SoftwareKeyStore(7, b"DOOR" + (7).to_bytes(4, "big"), keys)


def issued(ks, frame=59):
    state = blank_state(UID)
    aid = profile.DOOR_AID
    state["apps"][aid.hex()] = {
        "key_settings": 0x0B,
        "keys": [ks.derive_card_key(UID, aid, "app_master").hex(),
                 ks.derive_card_key(UID, aid, "door_read").hex()],
        "key_versions": [1, 1],
        "files": {"1": {"comm": 1, "access": "0010",
                        "data": profile.encode_credential(7, IDENT).hex()}},
    }
    return DesfireCard(state, frame=frame)


def test_old_door_get_card_uid_is_refused():
    """The EV1-form GetCardUID the door used to send: refused, and the session is over."""
    ks = store()
    card = issued(ks)
    r = Reader(card.process)
    r.select_application(profile.DOOR_AID)
    r.authenticate(ks.derive_card_key(UID, profile.DOOR_AID, "door_read"), profile.KEY_DOOR_READ)
    try:
        r.command(ev2.CMD_GET_CARD_UID, b"", b"", Reader.MODE_PLAIN, Reader.MODE_FULL)
    except CardError as e:
        assert e.status == ev2.ST_LENGTH_ERROR
    else:
        raise AssertionError("the card answered a GetCardUID without its MAC")
    assert card.channel is None


def _mac_tamper(card, ins, how):
    """A transceive that removes (how='drop') or flips (how='flip') the MACt of command `ins`."""
    seen = []

    def t(apdu):
        apdu = bytes(apdu)
        if apdu[1] == ins:
            lc = apdu[4]
            body = apdu[5:5 + lc]
            body = body[:-8] if how == "drop" else body[:-1] + bytes([body[-1] ^ 0x80])
            apdu = apdu[:4] + bytes([len(body)]) + body + b"\x00" if body else apdu[:4] + b"\x00"
        resp = card.process(apdu)
        if apdu[1] == ins:
            seen.append(resp[-2:])
        return resp

    return t, seen


def test_door_flow_passes_the_strict_card():
    ks = store()
    r = cs.CardSession(ks).read(issued(ks).process, UID, 0x20)
    assert r.ok and r.ref == profile.desfire_ref(ks, 7, IDENT)


def test_door_flow_refused_when_any_command_mac_is_missing_or_wrong():
    ks = store()
    for ins in (ev2.CMD_GET_CARD_UID, ev2.CMD_READ_DATA):
        for how, status in (("drop", b"\x91\x7e"), ("flip", b"\x91\x1e")):
            card = issued(ks)
            t, seen = _mac_tamper(card, ins, how)
            r = cs.CardSession(ks).read(t, UID, 0x20)
            assert not r.ok and r.ref is None, (ins, how)
            assert seen == [status], (ins, how, seen)
            assert card.channel is None


def test_chained_answers_in_16_byte_frames():
    """The card splits the 40-byte ReadData answer (32 data + MACt) into 16-byte frames."""
    ks = store()
    card = issued(ks, frame=16)
    frames = []

    def t(apdu):
        resp = card.process(apdu)
        frames.append((bytes(apdu[:2]), resp[-2:], len(resp) - 2))
        return resp

    r = cs.CardSession(ks).read(t, UID, 0x20)
    assert r.ok and r.ref == profile.desfire_ref(ks, 7, IDENT)
    read = [f for f in frames if f[0] == b"\x90\xad"]
    assert read == [(b"\x90\xad", b"\x91\xaf", 16)]
    tail = frames[frames.index(read[0]) + 1:]
    assert tail == [(b"\x90\xaf", b"\x91\xaf", 16), (b"\x90\xaf", b"\x91\x00", 8)]


def test_file_longer_than_a_frame_both_directions():
    """A 200-byte file written and read back in MAC and Full modes, 16-byte frames each way."""
    for comm in (1, 3):
        state = blank_state(UID)
        state["apps"][APP] = {"key_settings": 0x0F, "keys": [ZERO.hex()], "key_versions": [0],
                              "files": {}}
        card = DesfireCard(state, frame=16)
        r = Reader(card.process, max_frame=16)
        r.select_application(H(APP))
        r.authenticate(ZERO, 0)
        r.command(ev2.CMD_CREATE_STD_DATA_FILE, b"", bytes([5, comm, 0x00, 0x00]) + ev2.u24le(200))
        data = bytes(range(200))
        r.write_data(5, 0, data, comm)
        assert bytes.fromhex(state["apps"][APP]["files"]["5"]["data"]) == data
        assert r.read_data(5, 0, 200, comm) == data
        assert r.channel.cmd_ctr == 3 and card.channel.cmd_ctr == 3


def test_chained_command_cut_short_is_refused():
    """The next command arriving instead of an expected 0xAF frame: the card drops the part."""
    state = blank_state(UID)
    state["apps"][APP] = {"key_settings": 0x0F, "keys": [ZERO.hex()], "key_versions": [0],
                          "files": {"5": {"comm": 0, "access": "EEEE", "data": bytes(64).hex()}}}
    card = DesfireCard(state)
    card.process(H("905A000003") + H(APP) + b"\x00")
    first = H("908D00000F") + b"\x05" + ev2.u24le(0) + ev2.u24le(64) + bytes(8) + b"\x00"
    assert card.process(first) == b"\x91\xaf"
    assert card.process(H("905A000003") + H(APP) + b"\x00") == b"\x91\x00"
    assert card.process(H("90AF000008") + bytes(8) + b"\x00") == b"\x91\x1c"
