# The AES-128 shim (crypto/aes.py) and HMAC-SHA256 (crypto/hmac256.py) against published
# vectors, on every interpreter and so every backend: `cryptography` and hashlib (CPython),
# cryptolib and hashlib (the PyPI MicroPython) and the images' C modules aes128 and hmacsha256
# (unix32, mcu: board/cmodules/doorcrypto), whose key schedules live on the C stack.
from crypto import aes

# FIPS-197 appendix C.1
FIPS_KEY = bytes(range(16))
FIPS_PLAIN = bytes.fromhex("00112233445566778899aabbccddeeff")
FIPS_CIPHER = bytes.fromhex("69c4e0d86a7b0430d8cdb78070b4c55a")

# NIST SP 800-38A F.2.1 / F.2.2 (CBC-AES128)
SP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
SP_IV = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
SP_PLAIN = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172a" "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef" "f69f2445df4f9b17ad2b417be66c3710")
SP_CIPHER = bytes.fromhex(
    "7649abac8119b246cee98e9b12e9197d" "5086cb9b507219ee95db113a917678b2"
    "73bed6b8e3c1743b7116e69e22229516" "3ff1caa1681fac09120eca307586e1a7")


def test_one_block_each_way_is_fips_197():
    k = aes.AES(FIPS_KEY)
    assert k.encrypt_block(FIPS_PLAIN) == FIPS_CIPHER
    assert k.decrypt_block(FIPS_CIPHER) == FIPS_PLAIN
    assert k.encrypt_block(bytearray(FIPS_PLAIN)) == FIPS_CIPHER  # any buffer


def test_cbc_is_sp_800_38a():
    k = aes.AES(SP_KEY)
    assert k.cbc(SP_IV, SP_PLAIN) == SP_CIPHER
    assert k.cbc(SP_IV, SP_CIPHER, False) == SP_PLAIN
    assert k.cbc(SP_IV, SP_PLAIN[:16]) == SP_CIPHER[:16]
    assert k.cbc_last(SP_PLAIN) == k.cbc(bytes(16), SP_PLAIN)[-16:]
    assert k.cbc(SP_IV, b"") == b""


def test_a_key_is_used_again_after_other_keys():
    # The C module expands the key at every call: nothing of one key may leak into another.
    a, b = aes.AES(SP_KEY), aes.AES(FIPS_KEY)
    assert a.encrypt_block(FIPS_PLAIN) != b.encrypt_block(FIPS_PLAIN)
    assert b.encrypt_block(FIPS_PLAIN) == FIPS_CIPHER
    assert a.cbc(SP_IV, SP_PLAIN) == SP_CIPHER


def test_wrong_lengths_are_refused():
    for bad in (b"", bytes(15), bytes(17)):
        try:
            aes.AES(bad)
        except ValueError:
            pass
        else:
            raise AssertionError("a %d-byte key was taken" % len(bad))
    try:
        aes.AES(SP_KEY).cbc(SP_IV, bytes(20))
    except ValueError:
        pass
    else:
        raise AssertionError("CBC took a part block")
    key = aes.AES(FIPS_KEY)
    for op in (key.encrypt_block, key.decrypt_block):
        for bad in (bytes(15), bytes(32)):  # two blocks: chained on one interpreter, not another
            try:
                op(bad)
            except ValueError:
                pass
            else:
                raise AssertionError("a %d-byte block was taken" % len(bad))


def test_the_c_module_refuses_a_short_iv_or_key_where_it_is_built():
    # Only the images have it; elsewhere the shim's checks above are the whole story.
    if aes._cbc is None:
        return
    for args in ((bytes(15), bytes(16), bytes(16)), (bytes(16), bytes(8), bytes(16)),
                 (bytes(16), bytes(16), bytes(17))):
        try:
            aes._cbc(args[0], args[1], args[2], True)
        except ValueError:
            pass
        else:
            raise AssertionError("aes128.cbc took %r" % (tuple(len(a) for a in args),))
    for key, block in ((bytes(15), bytes(16)), (bytes(16), bytes(32)), (bytes(16), b"")):
        try:
            aes._block(key, block, True)
        except ValueError:
            pass
        else:
            raise AssertionError("aes128.block took %r" % ((len(key), len(block)),))
    assert aes._block(FIPS_KEY, FIPS_PLAIN, True) == FIPS_CIPHER
    assert aes._block(FIPS_KEY, FIPS_CIPHER, False) == FIPS_PLAIN


# RFC 4231 HMAC-SHA256: test cases 1, 2 and 6 (a 131-byte key, hashed first)
from crypto.hmac256 import HMAC, hmac_sha256  # noqa: E402

RFC4231 = (
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
)


def test_hmac_sha256_is_rfc_4231_one_shot_in_two_parts_and_incremental():
    for key, msg, want in RFC4231:
        want = bytes.fromhex(want)
        assert hmac_sha256(key, msg) == want
        assert hmac_sha256(key, msg[:5], msg[5:]) == want  # the C module's second part
        h = HMAC(key)
        h.update(msg[:7])
        h.update(msg[7:])
        assert h.digest() == want
