"""A resident's card read through a slow reader link: the chip's ACK and answer reach the door
later than the driver's ACK timeout (a loaded machine behind the PN532 emulator, a real chip
or card that takes its time). The door must still grant the card, or give an honest reason;
sending the APDU again would run it twice on the card, and a second AuthenticateEV2First
part 1 draws a new RndB: the card then refuses part 2 and a valid card is refused as
auth_failed (seen in the soak on a loaded machine)."""

from __future__ import annotations

from card_reader import card_session as cs
from card_reader import pn532 as p
from host_tools.cards.kit import SiteKit
from host_tools.pn532_emu import LocalCard, PN532Emulator
from host_tools.pn532_sync import PN532

AUTH_FIRST = 0x71


class Clock:
    def __init__(self) -> None:
        self.t = 0

    def ticks_ms(self) -> int:
        return self.t

    def ticks_diff(self, a: int, b: int) -> int:
        return a - b


class LateLink:
    """The door's side of the reader link, the emulator on the other end: the chip's bytes
    for a command carrying the DESFire INS `late_ins` reach the door `late_ms` after the
    command was written (later bytes stay behind them, as on a wire). Time is the clock's:
    a read with nothing due moves it to the next arrival or the read's timeout."""

    def __init__(self, emu: PN532Emulator, clock: Clock, late_ins: int, late_ms: int,
                 times: int = 1, late_cmd: int | None = None) -> None:
        self.emu = emu
        self.late_cmd = late_cmd  # or: the answers to this command come late
        self.clock = clock
        self.late_ins = late_ins
        self.late_ms = late_ms
        self.times = times
        self.queue: list[tuple[int, bytes]] = []
        self.rx = b""
        self.sent: list[bytes] = []

    def write(self, buf: bytes | bytearray | memoryview) -> int:
        data = bytes(buf)
        self.sent.append(data)
        late = 0
        if self.late_cmd is not None:
            if self.times and len(data) > 6 and data[5:7] == bytes([p.TFI_HOST, self.late_cmd]):
                late = self.late_ms
                self.times -= 1
        elif self.times and len(data) > 9 \
                and data[5:7] == bytes([p.TFI_HOST, p.CMD_IN_DATA_EXCHANGE]) and data[9] == self.late_ins:
            late = self.late_ms
            self.times -= 1
        due = max([self.clock.t + late] + [d for d, _ in self.queue])
        self.queue.append((due, self.emu.receive(data)))
        return len(data)

    def _arrived(self) -> None:
        while self.queue and self.queue[0][0] <= self.clock.t:
            self.rx += self.queue.pop(0)[1]

    def read(self, n: int, timeout_ms: int) -> bytes:
        self._arrived()
        if not self.rx:
            until = self.clock.t + timeout_ms
            if self.queue:
                until = min(until, self.queue[0][0])
            self.clock.t = max(self.clock.t, until)
            self._arrived()
        out, self.rx = self.rx[:n], self.rx[n:]
        return out

    def reset_input(self) -> None:
        self._arrived()
        self.rx = b""


def _read(late_ms: int, times: int = 1) -> tuple[cs.CardResult, LateLink]:
    kit = SiteKit(41)
    card, ref = kit.issue()
    emu = PN532Emulator()
    emu.present(LocalCard(card.process, card.uid))
    clock = Clock()
    link = LateLink(emu, clock, AUTH_FIRST, late_ms, times)
    driver = PN532(link, clock=clock)
    target = driver.list_target()
    assert target is not None
    result = cs.CardSession(kit.store).read(driver.transceive, target.uid, target.sak)
    if result.ok:
        assert result.ref == ref
    return result, link


def _auth_firsts(link: LateLink) -> int:
    return sum(1 for f in link.sent if len(f) > 9 and f[6] == p.CMD_IN_DATA_EXCHANGE
               and f[9] == AUTH_FIRST)


def test_an_ack_later_than_the_ack_timeout_does_not_send_the_apdu_again() -> None:
    for late_ms in (60, 120, 400, 900):  # past the 50 ms ACK timeout, within the 1 s answer's
        result, link = _read(late_ms)
        assert result.reason == "ok", (late_ms, result.reason)
        assert _auth_firsts(link) == 1, late_ms


def test_a_chip_that_never_answers_is_card_lost_not_auth_failed() -> None:
    result, link = _read(10_000)
    assert result.reason == "card_lost"
    assert _auth_firsts(link) == 1


def test_the_next_read_after_a_late_answer_grants() -> None:
    """The late answer of a read given up on reaches the door while it reads the card again:
    it is not taken for the answer to another APDU."""
    kit = SiteKit(41)
    card, ref = kit.issue()
    emu = PN532Emulator()
    emu.present(LocalCard(card.process, card.uid))
    clock = Clock()
    link = LateLink(emu, clock, AUTH_FIRST, 1_200)
    driver = PN532(link, clock=clock)
    session = cs.CardSession(kit.store)
    outcomes = []
    for _ in range(6):
        try:
            target = driver.list_target()
        except p.PN532Error as e:
            outcomes.append(e.reason)
            continue
        assert target is not None
        outcomes.append(session.read(driver.transceive, target.uid, target.sak).reason)
        try:
            driver.release()
        except p.PN532Error as e:
            outcomes.append(e.reason)
    assert "auth_failed" not in outcomes and "bad_mac" not in outcomes, outcomes
    assert "wrong_response" not in outcomes, outcomes  # the late answers were not taken
    assert outcomes[0] == "card_lost" and outcomes[-1] == "ok", outcomes


def test_a_command_sent_again_after_a_late_ack_leaves_no_answer_for_the_card_step() -> None:
    """InListPassiveTarget ACKed late is sent again (it may run twice): the chip answers both
    copies, and the second answer, arriving during the first APDU, is not taken for the
    APDU's (the card step would end as card_lost with the card on the reader)."""
    kit = SiteKit(41)
    card, ref = kit.issue()
    emu = PN532Emulator()
    emu.present(LocalCard(card.process, card.uid))
    clock = Clock()
    link = LateLink(emu, clock, 0, 60, times=2, late_cmd=p.CMD_IN_LIST_PASSIVE_TARGET)
    driver = PN532(link, clock=clock)
    target = driver.list_target()
    assert target is not None
    assert sum(1 for f in link.sent if f[6:7] == bytes([p.CMD_IN_LIST_PASSIVE_TARGET])) == 2
    result = cs.CardSession(kit.store).read(driver.transceive, target.uid, target.sak)
    assert result.reason == "ok" and result.ref == ref
    assert driver.release() == 0
