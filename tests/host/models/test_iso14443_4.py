"""The card side of ISO/IEC 14443-4 against a reader side nobody here wrote: nfcpy's
`IsoDepInitiator`, with chaining both ways at every frame size and frames lost on the way to the
card or back (the reader's R(NAK)/R(ACK) recovery). Every APDU reaches the card once, whole, and
every answer comes back whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_tools.iso14443_4 import FSD, IsoDepCard, NoAnswer

nfc = pytest.importorskip("nfc")
tt4 = pytest.importorskip("nfc.tag.tt4")


class EchoCard:
    """Answers each APDU with a reply of a chosen length; records what it received."""

    ats = b"\x05\x78\x77\x81\x02"

    def __init__(self, reply_lengths: list[int]) -> None:
        self.received: list[bytes] = []
        self.replies: list[bytes] = []
        self._lengths = list(reply_lengths)

    def transceive(self, apdu: bytes) -> bytes:
        self.received.append(apdu)
        n = self._lengths.pop(0)
        reply = bytes((len(self.received) + i) & 0xFF for i in range(n)) + b"\x90\x00"
        self.replies.append(reply)
        return reply


class LossyField:
    """nfcpy's view of the reader: exchange(frame) -> frame, losing the frames it is told to."""

    def __init__(self, card: IsoDepCard, losses: list[str]) -> None:
        self.card = card
        self.losses = list(losses)  # per exchange: "" delivered, "to" lost on the way, "back" lost

    def exchange(self, data: bytes, timeout: float) -> bytes:
        loss = self.losses.pop(0) if self.losses else ""
        if loss == "to":
            raise nfc.clf.TimeoutError
        try:
            answer = self.card.frame(bytes(data))
        except NoAnswer:
            raise nfc.clf.TimeoutError from None
        if loss == "back":
            raise nfc.clf.TimeoutError
        return bytearray(answer)


def activate(card: EchoCard, fsdi: int) -> IsoDepCard:
    dep = IsoDepCard(card)
    assert dep.frame(bytes([0xE0, fsdi << 4])) == card.ats
    return dep


@settings(max_examples=150, deadline=None)
@given(fsci=st.integers(0, 8), fsdi=st.integers(0, 8),
       commands=st.lists(st.binary(min_size=1, max_size=400), min_size=1, max_size=4),
       reply_lengths=st.lists(st.integers(0, 500), min_size=4, max_size=4),
       losses=st.lists(st.sampled_from(["", "", "", "to", "back"]), max_size=30))
def test_every_apdu_arrives_once_and_every_answer_whole(fsci: int, fsdi: int, commands: list[bytes],
                                                        reply_lengths: list[int],
                                                        losses: list[str]) -> None:
    card = EchoCard(reply_lengths)
    dep = activate(card, fsdi)
    field = LossyField(dep, losses)
    reader = tt4.IsoDepInitiator(field, FSD[fsci], fwt=0.01)
    reader.n_retry_ack = reader.n_retry_nak = 40  # every loss in the list is recovered
    answers = [bytes(reader.exchange(bytearray(c))) for c in commands]
    assert card.received == commands
    assert answers == card.replies


def test_deselect_ends_the_session_until_the_next_rats() -> None:
    card = EchoCard([0, 0])
    dep = activate(card, 8)
    assert dep.frame(b"\x02\x90\x60\x00\x00\x00") == b"\x02\x90\x00"
    assert dep.frame(b"\xc2") == b"\xc2"
    with pytest.raises(NoAnswer):
        dep.frame(b"\x03\x90\x60\x00\x00\x00")
    assert dep.frame(b"\xe0\x80") == card.ats
    assert dep.frame(b"\x02\x90\x60\x00\x00\x00") == b"\x02\x90\x00"


def test_cid_is_echoed_and_frames_before_rats_are_ignored() -> None:
    card = EchoCard([1])
    dep = IsoDepCard(card)
    with pytest.raises(NoAnswer):
        dep.frame(b"\x02\x90\x60\x00\x00\x00")  # no RATS yet: layer 3 only
    dep.frame(b"\xe0\x81")
    assert dep.frame(b"\x0a\x01\x90\x60\x00\x00\x00") == b"\x0a\x01" + card.replies[0]


def test_a_presence_check_gets_an_ack() -> None:
    """nfcpy's presence check is R(NAK) with its next block number: rule 12, the card ACKs."""
    card = EchoCard([0])
    dep = activate(card, 8)
    dep.frame(b"\x02\x90\x60\x00\x00\x00")
    assert dep.frame(b"\xb3") == b"\xa2"
