"""The host's whitelist tags (reference_platform/cache_tags.py, the standard library's HMAC)
are the door's own bytes: the piece tag of wire.common and the file tag offline_cache
checks, both over crypto.hmac256; a piece or a file changed in any byte, or under another
key, does not pass."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from crypto.hmac256 import hmac_sha256
from host_tools import cache_build as cb
from host_tools.cards.kit import SiteKit
from offline_cache import fmt
from reference_platform.cache_tags import CacheTags
from wire import common
from wire.door import decode_cache_chunk
from wire.platform import encode_cache_chunk

keys = st.binary(min_size=16, max_size=80)  # longer than a block too: hashed first
u32 = st.integers(min_value=0, max_value=2**32 - 1)


@given(keys, u32, u32, u32, st.binary(max_size=300))
def test_a_piece_tag_is_the_doors(key: bytes, version: int, total: int, offset: int,
                                  data: bytes) -> None:
    tags = CacheTags(key)
    want = common.cache_chunk_tag(key, version, total, offset, data)
    assert tags.piece_tag(version, total, offset, data) == want
    assert tags.piece_ok(version, total, offset, data, want)
    assert not tags.piece_ok(version, total, (offset + 1) % 2**32, data, want)
    assert not CacheTags(key + b"x").piece_ok(version, total, offset, data, want)


@given(keys, st.binary(min_size=fmt.TAG_SIZE, max_size=400), st.data())
def test_a_file_tag_is_the_doors(key: bytes, data: bytes, draw: st.DataObject) -> None:
    tags = CacheTags(key)
    signed = tags.sign_file(data)
    body = data[:-fmt.TAG_SIZE]
    assert signed == body + hmac_sha256(key, body)
    assert tags.file_ok(signed) and tags.file_ok(memoryview(signed))
    at = draw.draw(st.integers(min_value=0, max_value=len(signed) - 1))
    bad = bytearray(signed)
    bad[at] ^= 1
    assert not tags.file_ok(bytes(bad))
    assert not CacheTags(key[::-1] + b"\x01").file_ok(signed)
    assert not tags.file_ok(signed[:fmt.TAG_SIZE - 1])


def test_a_files_pieces_are_the_doors_messages() -> None:
    """A whitelist file of several pieces, from the start and from a resume point: each
    message is what protocol.encode_cache_chunk makes, and the door's decoder takes it."""
    site = SiteKit()
    cards = [cb.pack_record(bytes([i >> 8, i & 255]) * 4, fmt.ACTIVE, False, 0, 0, 65535, 1)
             for i in range(1, 600)]
    data = cb.build(site.cache_key, fmt.KIND_SNAPSHOT, 7, 0, site.site_id, 0xFFFF, 0, cards, {}, [], 0)
    assert len(data) > 2 * common.CACHE_CHUNK
    for start in (0, common.CACHE_CHUNK):
        got = CacheTags(site.cache_key).pieces(data, start)
        offsets = range(start, len(data), common.CACHE_CHUNK)
        assert got == [encode_cache_chunk(7, len(data), o, data[o:o + common.CACHE_CHUNK],
                                                   site.cache_key) for o in offsets]
        version, total, offset, tag, piece = decode_cache_chunk(got[-1])
        assert (version, total) == (7, len(data)) and offset + len(piece) == total
        assert tag == common.cache_chunk_tag(site.cache_key, 7, total, offset, piece)
    assert struct.unpack(">I", got[0][4:8])[0] == 7
    assert "key" not in repr(CacheTags(site.cache_key)).replace("key hidden", "")


def test_a_door_key_is_derived_as_the_door_kdf_says() -> None:
    """sitekeys.door_key (the standard library's HMAC) against crypto.hmac256 over the KDF's
    input: the key a door was commissioned with is the one the platform signs with."""
    from host_tools.cards import sitekeys

    site = SiteKit(per_door=True).keys
    master = bytes.fromhex(site["keys"]["door_master"])
    for purpose in sitekeys.DOOR_PURPOSES:
        for device, epoch in (("city.d1", 1), ("hz.b1.d7", 3)):
            want = hmac_sha256(master, sitekeys.DOOR_KDF_LABEL + purpose.encode() + b"|"
                               + device.encode() + b"|" + epoch.to_bytes(4, "big"))
            assert sitekeys.door_key(site, purpose, device, epoch) == want
