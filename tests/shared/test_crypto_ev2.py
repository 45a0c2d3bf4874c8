# DESFire EV2 secure messaging against NXP AN12196 published examples (rev. 2.0:
# Table 14 AuthenticateEV2First, Table 18 ChangeFileSettings in CommMode.Full,
# Table 19 and 23 session keys, Tables 25/26 ChangeKey), and the session keys of
# this product's door flow.  Same vectors under CPython and MicroPython.
from crypto import aes, ev2
from crypto.ev2 import CardError, Reader, SecureChannel

H = bytes.fromhex
ZERO = bytes(16)

# AN12196 Table 14 (key 0x00, all-zero key)
T14_ENC_RNDB = H("A04C124213C186F22399D33AC2A30215")
T14_RNDB = H("B9E2FC789B64BF237CCCAA20EC7E6E48")
T14_RNDA = H("13C5DB8A5930439FC3DEF9A4C675360F")
T14_PART2 = H("35C3E05A752E0144BAC0DE51C1F22C56B34408A23D8AEA266CAB947EA8E0118D")
T14_RESP = H("3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F08120663")
T14_TI = H("9D00C4DF")
T14_ENC = H("1309C877509E5A215007FF0ED19CA564")
T14_MAC = H("4C6626F5E72EA694202139295C7A7FC7")


class Script:
    """A transceive that replays a published exchange and records what was sent."""

    def __init__(self, pairs):
        self.pairs = list(pairs)
        self.sent = []

    def __call__(self, apdu):
        self.sent.append(bytes(apdu))
        want, resp = self.pairs.pop(0)
        assert bytes(apdu) == want, (bytes(apdu).hex(), want.hex())
        return resp


def test_session_vectors_table14():
    sv = "13C5" + "6268A548D8FB" + "BF237CCCAA20EC7E6E48" + "C3DEF9A4C675360F"
    assert ev2.session_vector(ev2.LABEL_ENC, T14_RNDA, T14_RNDB) == H("A55A00010080" + sv)
    assert ev2.session_vector(ev2.LABEL_MAC, T14_RNDA, T14_RNDB) == H("5AA500010080" + sv)


def test_session_keys_three_published_handshakes():
    assert ev2.session_keys(ZERO, T14_RNDA, T14_RNDB) == (T14_ENC, T14_MAC)
    # Table 19 (key 0x03) and Table 23 (AuthenticateEV2NonFirst, same derivation)
    t19 = (H("B98F4C50CF1C2E084FD150E33992B048"), H("91517975190DCEA6104948EFA3085C1B"))
    assert ev2.session_keys(ZERO, t19[0], t19[1]) == (
        H("7A93D6571E4B180FCA6AC90C9A7488D4"), H("FC4AF159B62E549B5812394CAB1918CC"))
    t23 = (H("60BE759EDA560250AC57CDDC11743CF6"), H("6924E8D09722659A2E7DEC68E66312B8"))
    assert ev2.session_keys(ZERO, t23[0], t23[1]) == (
        H("4CF3CB41A22583A61E89B158D252FC53"), H("5529860B2FC5FB6154B7F28361D30BF9"))


def test_authenticate_ev2_first_table14_exchange():
    s = Script([
        (H("9071000002000000"), T14_ENC_RNDB + b"\x91\xaf"),
        (H("90AF000020") + T14_PART2 + b"\x00", T14_RESP + b"\x91\x00"),
    ])
    r = Reader(s)
    aes.reset_blocks()
    ch = r.authenticate(ZERO, 0, rnd_a=T14_RNDA)
    assert ch.ti == T14_TI and ch.cmd_ctr == 0
    # RndB decrypt 1, RndA||RndB' 2, response 2, session keys 1 + 2 + 2,
    # subkeys of the session MAC key 1
    assert aes.blocks() == 11
    assert ch.iv_cmd() == aes.AES(T14_ENC).encrypt_block(b"\xa5\x5a" + T14_TI + bytes(10))


def test_authenticate_rejects_wrong_rnda_echo():
    wrong = bytearray(T14_RNDA)
    wrong[0] ^= 1
    s = Script([
        (H("9071000002000000"), T14_ENC_RNDB + b"\x91\xaf"),
        (None, T14_RESP + b"\x91\x00"),
    ])
    part2 = aes.cbc_encrypt(aes.AES(ZERO), bytes(16), bytes(wrong) + ev2.rotl(T14_RNDB))
    s.pairs[1] = (H("90AF000020") + part2 + b"\x00", T14_RESP + b"\x91\x00")
    r = Reader(s)
    try:
        r.authenticate(ZERO, 0, rnd_a=bytes(wrong))
    except CardError as e:
        assert e.reason == "auth_failed"
        assert r.channel is None
        return
    raise AssertionError("accepted a response echoing another RndA")


def test_authentication_error_status():
    r = Reader(Script([(H("9071000002010000"), b"\x91\xae")]))
    try:
        r.authenticate(ZERO, 1)
    except CardError as e:
        assert e.reason == "auth_failed" and e.status == 0xAE
        return
    raise AssertionError("no error")


def test_full_mode_change_file_settings_table18():
    ch = SecureChannel(T14_TI, T14_ENC, T14_MAC)
    ch.cmd_ctr = 1
    assert ch.iv_cmd() == H("3E27082AB2ACC1EF55C57547934E9962")
    enc = ch.encrypt_cmd(H("4000E0C1F121200000430000430000"))
    assert enc == H("61B6D97903566E84C3AE5274467E89EA")
    assert ch.cmd_mac(0x5F, b"\x02", enc) == H("D799B7C1A0EF7A04")
    # through the reader: the exact published C-APDU, and the response MAC checked
    s = Script([(H("905F0000190261B6D97903566E84C3AE5274467E89EAD799B7C1A0EF7A0400"),
                 H("57BFF87B1241E93D9100"))])
    r = Reader(s)
    r.channel = SecureChannel(T14_TI, T14_ENC, T14_MAC)
    r.channel.cmd_ctr = 1
    cfs = H("4000E0C1F121200000430000430000")
    assert r.command(0x5F, b"\x02", cfs, Reader.MODE_FULL, Reader.MODE_MAC) == b""
    assert r.channel.cmd_ctr == 2


def test_forged_response_mac_is_rejected():
    r = Reader(Script([(H("905F0000190261B6D97903566E84C3AE5274467E89EAD799B7C1A0EF7A0400"),
                        H("57BFF87B1241E93E9100"))]))
    r.channel = SecureChannel(T14_TI, T14_ENC, T14_MAC)
    r.channel.cmd_ctr = 1
    try:
        r.command(0x5F, b"\x02", H("4000E0C1F121200000430000430000"), Reader.MODE_FULL, Reader.MODE_MAC)
    except CardError as e:
        assert e.reason == "bad_mac" and r.channel is None
        return
    raise AssertionError("forged MAC accepted")


def test_change_key_other_key_table25():
    new = H("F3847D627727ED3BC9C4CC050489B966")
    assert ev2.crc32_desfire(new) == H("789DFADC")
    assert ev2.change_key_plaintext(2, 0, new, ZERO, 1) == new + b"\x01" + H("789DFADC")
    r = Reader(Script([(H("90C4000029022CF362B7BF4311FF3BE1DAA295E8C68DE09050560D19B9E16C2393AE9CD1FAC7"
                          "5D0CE20BCD1D06E600"), H("203BB55D1089D5879100"))]))
    r.channel = SecureChannel(H("7614281A"), H("4CF3CB41A22583A61E89B158D252FC53"),
                              H("5529860B2FC5FB6154B7F28361D30BF9"))
    r.channel.cmd_ctr = 2
    r.auth_key_no = 0
    assert r.channel.iv_cmd() == H("307EDE1814707F30CFE603DD6CA62353")
    r.change_key(2, new, ZERO, 1)
    assert r.channel.cmd_ctr == 3


def test_change_key_auth_key_table26():
    r = Reader(Script([(H("90C400002900C0EB4DEEFEDDF0B513A03A95A75491818580503190D4D05053FF75668A01D6FDA6"
                          "610234BDED643200"), H("9100"))]))
    r.channel = SecureChannel(H("7614281A"), H("4CF3CB41A22583A61E89B158D252FC53"),
                              H("5529860B2FC5FB6154B7F28361D30BF9"))
    r.channel.cmd_ctr = 3
    r.auth_key_no = 0
    assert r.channel.iv_cmd() == H("01602D579423B2797BE8B478B0B4D27B")
    r.change_key(0, H("5004BF991F408672B1EF00F08F9E8647"), None, 1)
    assert r.channel is None  # the session ends with the key that made it


def test_mac_mode_read_data_round_trip():
    # ReadData in CommMode.MAC: MAC over Cmd || CmdCtr || TI || header on the way in,
    # over RC || CmdCtr+1 || TI || data on the way out.
    card = SecureChannel(T14_TI, T14_ENC, T14_MAC)
    data = bytes(range(32))
    hdr = b"\x01" + bytes(3) + b"\x20\x00\x00"

    def card_side(apdu):
        assert apdu[:5] == H("90AD00000F") and apdu[5:12] == hdr
        assert apdu[12:20] == card.cmd_mac(0xAD, hdr, b"")
        card.cmd_ctr += 1
        return data + card.resp_mac(0, data) + b"\x91\x00"

    r = Reader(card_side)
    r.channel = SecureChannel(T14_TI, T14_ENC, T14_MAC)
    assert r.read_data(1, 0, 32) == data
    assert r.channel.cmd_ctr == 1


def test_no_response_is_card_lost():
    def gone(apdu):
        raise OSError("card removed")

    try:
        Reader(gone).select_application(b"\x01\xd0\xf5")
    except CardError as e:
        assert e.reason == "no_response"
        return
    raise AssertionError("no error")
