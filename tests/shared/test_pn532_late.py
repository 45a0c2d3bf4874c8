# mpy-heapsize: 96K
# The PN532 driver on a slow link, on both interpreters: an ACK later than the ACK timeout,
# a late answer to an earlier command arriving after the flush. An APDU must never run twice
# on the card, and a late answer must never be taken for another command's.
from card_reader import pn532 as p
from host_tools.pn532_sync import PN532
from tests.clock import ManualClock
from tests.pn532_script import Script, driver, expect_error, h, resp




def listed(replies):
    d, s = driver([resp(h("4B 01 01 00 04 08 04 92 2E 58 32"))] + replies)
    d.list_target()
    return d, s


class SlowChip(Script):
    """A PN532 that answers every copy of a command it receives (`answers`: command code ->
    reply), those to InDataExchange reaching the host `late_ms` after the command: later
    than the driver's ACK timeout (a slow link, a loaded host, a slow chip or card)."""

    def __init__(self, clock, answers, late_ms):
        Script.__init__(self, clock, [])
        self.answers = answers
        self.late_ms = late_ms
        self.due = []  # (ticks, bytes) not yet arrived

    def write(self, buf):
        data = bytes(buf)
        self.sent.append(data)
        late = self.late_ms if data[6] == p.CMD_IN_DATA_EXCHANGE else 0
        self.due.append((self.clock.t + late, self.answers[data[6]]))
        return len(data)

    def _arrive(self):
        while self.due and self.due[0][0] <= self.clock.t:
            self.rx += self.due.pop(0)[1]

    def read(self, n, timeout_ms):
        self._arrive()
        if not self.rx:
            step = timeout_ms
            if self.due:
                step = min(step, max(0, self.due[0][0] - self.clock.t))
            self.clock.t += step
            self._arrive()
            if not self.rx:
                return b""
        return Script.read(self, n, timeout_ms)

    def reset_input(self):
        self._arrive()
        Script.reset_input(self)


def test_an_apdu_acked_late_is_not_sent_again():
    """InDataExchange not ACKed within the ACK timeout is not sent again: the chip may be
    running it on the card already, and an APDU must not run twice (a second
    AuthenticateEV2First part 1 draws a new RndB: the card refuses part 2)."""
    clock = ManualClock()
    script = SlowChip(clock, {p.CMD_IN_LIST_PASSIVE_TARGET: resp(h("4B 01 01 00 04 08 04 92 2E 58 32")),
                              p.CMD_IN_DATA_EXCHANGE: resp(h("41 00 AA BB 91 AF"))}, 120)
    d = PN532(script, clock=clock)
    assert d.list_target().uid == h("92 2E 58 32")
    script.sent.clear()
    assert d.exchange(h("90 71 00 00 02 01 00 00")) == h("AA BB 91 AF")
    assert len(script.sent) == 1 and script.sent[0][6] == p.CMD_IN_DATA_EXCHANGE
    assert clock.t >= 120


def test_an_apdu_never_acked_is_no_answer_and_not_sent_again():
    d, s = listed([b""])
    s.sent.clear()
    start = d.core.ticks()
    expect_error(lambda: d.exchange(b"\x00", 1000), p.E_NO_ANSWER)
    assert len(s.sent) == 1
    assert d.core.ticks() - start >= 1000  # waited as long as for an answer


def test_an_apdu_nacked_by_the_chip_is_sent_again():
    d, s = listed([p.NACK, resp(h("41 00 90 00"))])
    s.sent.clear()
    assert d.exchange(b"\x00") == h("90 00")
    assert len(s.sent) == 2 and s.sent[0] == s.sent[1]


def test_a_late_answer_to_an_earlier_command_is_skipped():
    """An earlier command's ACK and answer arrive after this command's flush (it was sent
    again after a late ACK): the ACK is taken for this command's, the earlier answer is
    skipped, and this command's own answer is the result."""
    late = resp(h("4B 01 01 00 04 08 04 92 2E 58 32"))
    d, s = listed([late + resp(h("41 00 90 00"))])
    assert d.exchange(h("90 5A 00 00 03 01 D0 F5 00")) == h("90 00")
    d, s = listed([late * 5 + resp(h("41 00 90 00"))])  # bounded: not forever
    expect_error(lambda: d.exchange(b"\x00"), p.E_WRONG_RESPONSE)
    d, s = driver([resp(h("4B 00"))])  # an answer to a command never sent is wrong
    expect_error(d.firmware_version, p.E_WRONG_RESPONSE)
