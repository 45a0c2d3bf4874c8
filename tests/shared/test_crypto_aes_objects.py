# crypto.aes makes each cipher object once per key (a ~300-byte heap allocation on the
# device) and keeps one CBC chain per key: every call, whatever the IV and whatever came
# before on the same key, gives what a fresh CBC from that IV gives. Same on both interpreters.
# The card read's test brings the card simulator (host code compiled at import):
# mpy-heapsize: 256K
from crypto import aes
from crypto.cmac import CMAC
from crypto.ev2 import session_keys
from card_reader import card_session as cs

from tests.shared.test_crypto_card_session import UID, issued, store

H = bytes.fromhex
KEY = H("2b7e151628aed2a6abf7158809cf4f3c")


def _lcg(seed):
    """Deterministic bytes on both interpreters (no hypothesis on MicroPython)."""
    x = [seed]

    def take(n):
        out = bytearray(n)
        for i in range(n):
            x[0] = (x[0] * 1103515245 + 12345) & 0x7FFFFFFF
            out[i] = (x[0] >> 16) & 0xFF
        return bytes(out)

    return take


def _fresh_cbc(iv, data):
    """CBC from `iv` one block at a time on a fresh key: the definition, not the chain."""
    c = aes.AES(KEY)
    out, prev = b"", bytes(iv)
    for i in range(0, len(data), 16):
        prev = c.encrypt_block(aes.xor(data[i : i + 16], prev))
        out += prev
    return out


def test_nist_sp800_38a_cbc_vectors():
    # SP 800-38A F.2.1 / F.2.2 (CBC-AES128), twice on one object: the chain's state after
    # the first call must not leak into the second.
    iv = H("000102030405060708090a0b0c0d0e0f")
    plain = H("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
              "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
    cipher = H("7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
               "73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7")
    c = aes.AES(KEY)
    for _ in range(2):
        assert c.cbc(iv, plain) == cipher
        assert c.cbc(iv, cipher, False) == plain
        assert c.cbc(iv, plain[:16]) == cipher[:16]


def test_every_call_on_one_chain_equals_a_fresh_cbc():
    take = _lcg(2026)
    c = aes.AES(KEY)
    for i in range(60):
        n = 16 * (1 + take(1)[0] % 4)
        iv = aes.ZERO_IV if i % 3 == 0 else take(16)
        data = take(n)
        assert c.cbc(iv, data) == _fresh_cbc(iv, data), i
        assert c.cbc(iv, c.cbc(iv, data), False) == data, i
        assert c.cbc_last(data) == _fresh_cbc(aes.ZERO_IV, data)[-16:], i
        if i % 5 == 0:
            assert c.decrypt_block(c.encrypt_block(data[:16])) == data[:16]


def test_one_key_makes_at_most_three_objects():
    start = aes.objects()
    c = aes.AES(KEY)
    assert aes.objects() == start  # nothing until used
    take = _lcg(7)
    for _ in range(10):
        c.cbc(take(16), take(32))
        c.cbc(take(16), take(48), False)
        c.cbc_last(take(64))
        c.encrypt_block(take(16))
        c.decrypt_block(take(16))
    assert aes.objects() - start == 3  # ECB encryptor, ECB decryptor, the CBC chain


def test_cmac_on_an_existing_aes_makes_no_new_object():
    c = aes.AES(KEY)
    c.cbc(H("00" * 15 + "01"), bytes(32))  # the chain's state is not zero
    start = aes.objects()
    mac = CMAC(c)
    assert mac.mac(b"") == H("bb1d6929e95937287fa37d129b756746")  # RFC 4493 example 1
    assert aes.objects() == start
    rnd_a, rnd_b = bytes(range(16)), bytes(range(16, 32))
    assert session_keys(c, rnd_a, rnd_b) == session_keys(KEY, rnd_a, rnd_b)


def test_a_card_read_makes_few_cipher_objects():
    # The door's side of a whole EV2 read (diversification, authentication, session keys,
    # the MAC'd read): the simulated card's own objects are not counted.
    ks = store()
    card = issued(ks)
    inner = card.process
    in_card = [0]

    def process(apdu):
        before = aes.objects()
        answer = inner(apdu)
        in_card[0] += aes.objects() - before
        return answer

    start = aes.objects()
    assert cs.CardSession(ks).read(process, UID, 0x20).ok
    assert aes.objects() - start - in_card[0] <= 5  # fifteen when CBC made one per call
