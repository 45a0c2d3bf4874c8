# AES-CMAC (RFC 4493 section 4 examples) and AN10922 AES-128 key diversification,
# same vectors under CPython and MicroPython.
from crypto import aes, ct
from crypto.cmac import CMAC, cmac, truncate
from crypto.diversify import diversify_aes128, div_input

H = bytes.fromhex
RFC_KEY = H("2b7e151628aed2a6abf7158809cf4f3c")
RFC_MSG = H(
    "6bc1bee22e409f96e93d7e117393172a"
    "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef"
    "f69f2445df4f9b17ad2b417be66c3710"
)


def test_aes_fips197_block():
    # FIPS-197 appendix C.1
    c = aes.AES(H("000102030405060708090a0b0c0d0e0f"))
    assert c.encrypt_block(H("00112233445566778899aabbccddeeff")) == H("69c4e0d86a7b0430d8cdb78070b4c55a")
    assert c.decrypt_block(H("69c4e0d86a7b0430d8cdb78070b4c55a")) == H("00112233445566778899aabbccddeeff")


def test_rfc4493_subkeys():
    c = CMAC(RFC_KEY)
    assert c.k1 == H("fbeed618357133667c85e08f7236a8de")
    assert c.k2 == H("f7ddac306ae266ccf90bc11ee46d513b")


def test_rfc4493_examples():
    assert cmac(RFC_KEY, b"") == H("bb1d6929e95937287fa37d129b756746")
    assert cmac(RFC_KEY, RFC_MSG[:16]) == H("070a16b46b4d4144f79bdd9dd04a287c")
    assert cmac(RFC_KEY, RFC_MSG[:40]) == H("dfa66747de9ae63030ca32611497c827")
    assert cmac(RFC_KEY, RFC_MSG) == H("51f0bebf7e3b9d92fc49741779363cfe")


def test_truncate_takes_odd_indexed_bytes():
    assert truncate(bytes(range(16))) == bytes([1, 3, 5, 7, 9, 11, 13, 15])


def test_an10922_aes128_example():
    # NXP AN10922 section 2.2.1: master key, UID 04782E21801D80, AID 3042F5,
    # system identifier "NXP Abu".
    master = H("00112233445566778899aabbccddeeff")
    m = div_input(H("04782E21801D80"), H("3042F5"), b"NXP Abu")
    assert m == H("04782E21801D803042F54E585020416275")
    c = CMAC(master)
    assert c.k2 == H("F793EEB928278083BFDC8A5A7E0E0D25")
    assert diversify_aes128(master, m) == H("A8DD63A3B89D54B37CA802473FDA9175")


def test_an10922_input_bounds():
    for bad in (b"", bytes(32)):
        try:
            diversify_aes128(bytes(16), bad)
        except ValueError:
            continue
        raise AssertionError("accepted %d bytes" % len(bad))
    # 31 bytes: no padding, K1 path; differs from the padded 30-byte input
    assert diversify_aes128(bytes(16), bytes(31)) != diversify_aes128(bytes(16), bytes(30))


def test_constant_time_equal():
    assert ct.equal(b"abc", b"abc")
    assert not ct.equal(b"abc", b"abd")
    assert not ct.equal(b"abc", b"ab")
    assert ct.equal(b"", b"")


def test_padding_m2():
    assert aes.pad_m2(b"\x01\x02") == b"\x01\x02\x80" + bytes(13)
    assert len(aes.pad_m2(bytes(16))) == 32
    assert aes.unpad_m2(aes.pad_m2(b"xyz")) == b"xyz"
    try:
        aes.unpad_m2(bytes(16))
    except ValueError:
        return
    raise AssertionError("bad padding accepted")


def test_block_counter():
    aes.reset_blocks()
    cmac(RFC_KEY, RFC_MSG)
    assert aes.blocks() == 5  # one for the subkeys, four message blocks
