"""The project's AES-CMAC, CBC and diversification against the `cryptography` library, on many
random inputs (the published vectors are in tests/shared/test_crypto_*.py)."""

from __future__ import annotations

from cryptography.hazmat.primitives import cmac as lib_cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto import aes, ev2
from crypto.cmac import CMAC
from crypto.diversify import diversify_aes128

keys = st.binary(min_size=16, max_size=16)


def _lib_cmac(key: bytes, data: bytes) -> bytes:
    c = lib_cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


@settings(max_examples=300, deadline=None)
@given(keys, st.binary(max_size=100))
def test_cmac_matches_library(key: bytes, data: bytes) -> None:
    assert CMAC(key).mac(data) == _lib_cmac(key, data)


@settings(max_examples=200, deadline=None)
@given(keys, keys, st.binary(min_size=0, max_size=6).map(lambda b: b * 16))
def test_cbc_matches_library(key: bytes, iv: bytes, data: bytes) -> None:
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    want = enc.update(data) + enc.finalize()
    c = aes.AES(key)
    assert aes.cbc_encrypt(c, iv, data) == want
    assert aes.cbc_decrypt(c, iv, want) == data


@settings(max_examples=200, deadline=None)
@given(keys, st.binary(min_size=16, max_size=30))
def test_diversification_is_cmac_when_input_spans_two_blocks(key: bytes, m: bytes) -> None:
    # 01 || M of 17..31 bytes: AN10922's 32-byte padding is CMAC's own padding
    assert diversify_aes128(key, m) == _lib_cmac(key, b"\x01" + m)


@settings(max_examples=100, deadline=None)
@given(keys, keys, st.binary(min_size=4, max_size=4), st.binary(max_size=60), st.integers(0, 65535))
def test_full_mode_round_trip_between_reader_and_card(enc: bytes, mac: bytes, ti: bytes, data: bytes,
                                                      ctr: int) -> None:
    reader = ev2.SecureChannel(ti, enc, mac)
    card = ev2.SecureChannel(ti, enc, mac)
    reader.cmd_ctr = card.cmd_ctr = ctr
    assert card.decrypt_cmd(reader.encrypt_cmd(data)) == data
    reply = card.encrypt_resp(data, (ctr + 1) & 0xFFFF)
    reader.cmd_ctr = (ctr + 1) & 0xFFFF
    assert reader.decrypt_resp(reply) == data
