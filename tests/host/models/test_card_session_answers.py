"""Whatever a card (or an attacker's device) answers, the door's card step returns a result with a
reason and never raises."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from card_reader import card_session as cs
from crypto.keystore import SoftwareKeyStore
from host_tools.cards.desfire import DesfireCard, blank_state
from wire import card_profile as profile
from wire.codes import CARD_REASONS

KS = SoftwareKeyStore(7, b"DOOR\x00\x00\x00\x07",
                      {"app_master": b"\x01" * 16, "door_read": b"\x02" * 16, "card_ref": b"\x03" * 32})
UID = bytes.fromhex("04112233445566")


def _good_card() -> DesfireCard:
    state = blank_state(UID)
    aid = profile.DOOR_AID
    state["apps"][aid.hex()] = {
        "key_settings": 0x0B,
        "keys": [KS.derive_card_key(UID, aid, "app_master").hex(),
                 KS.derive_card_key(UID, aid, "door_read").hex()],
        "key_versions": [1, 1],
        "files": {"1": {"comm": 1, "access": "0010", "data": profile.encode_credential(7, bytes(16)).hex()}},
    }
    return DesfireCard(state)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=70), min_size=1, max_size=8), st.sampled_from([None, 0x20, 0x08, 0x00]))
def test_arbitrary_answers_never_raise(answers: list[bytes], sak: int | None) -> None:
    queue = list(answers)

    def transceive(apdu: bytes) -> bytes:
        if not queue:
            raise OSError("no answer")
        return queue.pop(0)

    for legacy in (False, True):
        r = cs.CardSession(KS, legacy_uid=legacy).read(transceive, UID, sak)
        assert r.reason in CARD_REASONS and (r.reason == "ok") == r.ok
        assert r.ok == (r.ref is not None)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=5), st.integers(min_value=0, max_value=80), st.integers(1, 255))
def test_one_flipped_bit_in_any_answer_is_refused(which: int, pos: int, mask: int) -> None:
    """A real card's answers with one byte altered: never a wrong reference."""
    card = _good_card()
    good = cs.CardSession(KS).read(_good_card().process, UID, 0x20)
    assert good.ok
    count = [0]

    def transceive(apdu: bytes) -> bytes:
        resp = bytearray(card.process(apdu))
        if count[0] == which and pos < len(resp) - 2:
            resp[pos] ^= mask
        count[0] += 1
        return bytes(resp)

    r = cs.CardSession(KS).read(transceive, UID, 0x20)
    assert not r.ok or r.ref == good.ref
