"""A simulated door checks its whitelist pieces as the firmware does (firmware/cache_sync.py):
with its own cache key it takes a file signed for it, and nothing of one signed for another
door, nor a file whose pieces are the platform's but whose own tag is not."""

from __future__ import annotations

from host_tools import cache_build
from host_tools.cards.kit import SiteKit
from host_tools.doorsim import SimDoor
from offline_cache import fmt
from reference_platform.cache_tags import CacheTags
from reference_platform.door_signing import DoorSigner
from wire import common
from wire.platform import decode_cache_state


def _delta(site: SiteKit) -> bytes:
    cards = [cache_build.pack_record(bytes([i >> 8, i & 255]) * 4, fmt.LOST, False, 0, 0, 65535, 1)
             for i in range(1, 300)]
    return cache_build.build(site.cache_key, fmt.KIND_DELTA, 2, 1, site.site_id, 0xFFFF, 0, cards, {}, [], 0)


def _give(door: SimDoor, pieces: list[bytes]) -> None:
    for piece in pieces:
        door._on_message(common.topic(door.device, "cache"), piece, False)


def test_a_door_takes_its_own_file_and_nothing_signed_for_another() -> None:
    site = SiteKit(per_door=True)
    signer = DoorSigner(site.keys)
    data = _delta(site)
    mine = SimDoor("city.d1", [], whitelist=1, cache_key=signer.key("cache", "city.d1"))
    assert len(signer.tags("city.d1").pieces(data)) > 1

    _give(mine, signer.tags("city.d2").pieces(signer.whitelist_for("city.d2", data)))
    assert mine.whitelist == 1 and mine.refused > 0  # another door's pieces: refused, not taken

    _give(mine, signer.tags("city.d1").pieces(signer.whitelist_for("city.d1", data)))
    assert mine.whitelist == 2 and 2 in mine.updated_at


def test_a_file_whose_own_tag_is_wrong_is_not_taken() -> None:
    site = SiteKit(per_door=True)
    signer = DoorSigner(site.keys)
    tags = signer.tags("city.d1")
    data = bytearray(signer.whitelist_for("city.d1", _delta(site)))
    data[-1] ^= 1  # the file's tag; every piece is still tagged by the platform's key
    door = SimDoor("city.d1", [], whitelist=1, cache_key=signer.key("cache", "city.d1"))
    _give(door, tags.pieces(bytes(data)))
    assert door.whitelist == 1 and door.refused == 1 and 2 not in door.updated_at
    _give(door, tags.pieces(signer.whitelist_for("city.d1", _delta(site))))  # sent again, right
    assert door.whitelist == 2


def test_without_a_key_a_door_takes_pieces_unchecked() -> None:
    site = SiteKit()
    door = SimDoor("city.d1", [], whitelist=1)
    _give(door, CacheTags(b"k" * 32).pieces(_delta(site)))
    assert door.whitelist == 2 and door.refused == 0


def test_a_file_of_a_version_the_door_holds_is_refused_as_stale() -> None:
    """As the firmware's check_offer: the state names the version held and the reason, so the
    platform knows the door holds it (an answer that came late, a file sent twice)."""
    site = SiteKit(per_door=True)
    signer = DoorSigner(site.keys)
    sent: list[bytes] = []
    door = SimDoor("city.d1", [], whitelist=2, cache_key=signer.key("cache", "city.d1"))
    door._report = sent.append  # type: ignore[method-assign,assignment]
    _give(door, signer.tags("city.d1").pieces(signer.whitelist_for("city.d1", _delta(site))))
    assert door.whitelist == 2 and 2 not in door.updated_at
    assert [decode_cache_state(s) for s in sent][0]["reason"] == "stale_version"
    assert [decode_cache_state(s)["version"] for s in sent] == [2]
