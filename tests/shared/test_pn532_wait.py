# mpy-heapsize: 96K
# The PN532 driver waiting for a card (MaxRetries FF, wait_target / abort), on both
# interpreters, against scripted PN532 byte streams (a tick counter stands in for time).
from card_reader import pn532 as p
from tests.pn532_script import driver, expect_error, h, resp




def test_wait_target_empty_field_keeps_the_command_pending():
    """The chip holding InListPassiveTarget (MaxRetries FF) sends only its ACK: after wait_ms
    the driver reports an empty field and leaves the command pending; the next wait_target
    sends nothing and takes the answer when it comes; abort() or any other command first
    ends a pending one with an ACK frame."""
    target = h("01 01 03 44 20 07 04 11 22 33 44 55 66 06 75 77 81 02 80")
    d, s = driver([resp(h("33")), p.ACK])
    d.rf_retries(p.RETRY_FOREVER)
    assert s.sent[0] == p.encode_frame(p.TFI_HOST, h("32 05 FF 01 FF"))
    start = d.core.ticks()
    assert d.wait_target(200) is None
    assert s.sent[1] == h("00 00 FF 04 FC D4 4A 02 00 E0 00") and len(s.sent) == 2
    assert d.core.ticks() - start >= 200
    assert d.wait_target(200) is None and len(s.sent) == 2  # still the same command
    s.rx += p.encode_frame(p.TFI_PN532, h("4B") + target)  # a card came
    assert d.wait_target(200).uid == h("04 11 22 33 44 55 66") and len(s.sent) == 2
    assert not d.core.listing


def test_a_pending_wait_is_aborted_before_anything_else():
    d, s = driver([p.ACK, b"", resp(h("03 32 01 06 07"))])
    assert d.wait_target(50) is None
    assert d.firmware_version() == h("32 01 06 07")
    assert s.sent[1] == p.ACK and s.sent[2] == p.encode_frame(p.TFI_HOST, h("02"))
    d, s = driver([p.ACK, b""])
    assert d.wait_target(50) is None
    d.abort()
    d.abort()  # nothing pending any more: nothing sent
    assert s.sent[1:] == [p.ACK]
    expect_error(lambda: d.exchange(b"\x00"), p.E_NO_CARD)


def test_an_answer_split_across_two_waits_is_whole():
    """A frame half received when a wait ends is completed by the next one."""
    target = h("01 01 00 04 08 04 92 2E 58 32")
    frame = p.encode_frame(p.TFI_PN532, h("4B") + target)
    d, s = driver([p.ACK + frame[:7]])
    assert d.wait_target(50) is None
    s.rx += frame[7:]
    assert d.wait_target(50).uid == h("92 2E 58 32")


def test_wait_target_answer_is_the_card():
    target = h("01 01 03 44 20 07 04 11 22 33 44 55 66 06 75 77 81 02 80")
    d, s = driver([resp(h("4B") + target), resp(h("41 00 91 00"))])
    t = d.wait_target(200)
    assert t.uid == h("04 11 22 33 44 55 66") and len(s.sent) == 1  # no abort
    assert d.exchange(h("90 5A 00 00 03 01 D0 F5 00")) == h("91 00")


def test_wait_target_two_cards_are_refused():
    two = h("4B 02 01 00 04 08 04 92 2E 58 32 02 00 04 08 04 01 02 03 04")
    d, s = driver([resp(two), resp(h("53 00"))])
    expect_error(lambda: d.wait_target(200), p.E_TWO_CARDS)
    assert s.sent[-1] == p.encode_frame(p.TFI_HOST, h("52 00"))


CARD = h("01 01 03 44 20 07 04 11 22 33 44 55 66 06 75 77 81 02 80")
LIST = h("00 00 FF 04 FC D4 4A 02 00 E0 00")


def test_a_wait_pending_past_renew_ms_is_sent_again():
    """A chip that reset while it waited (a brown-out, a reader swapped) has forgotten the
    command and stays silent with a card in the field: the wait that ends renew_ms after the
    command was sent ends it (ACK), the next sends it again and finds the card. Before that
    nothing goes on the wire."""
    d, s = driver([p.ACK, b"", resp(h("4B") + CARD)])
    for _ in range(4):
        assert d.wait_target(200, 2, 1000) is None
        assert s.sent == [LIST]
    assert d.wait_target(200, 2, 1000) is None and d.core.ticks() == 1000
    assert s.sent == [LIST, p.ACK]
    assert d.wait_target(200, 2, 1000).uid == h("04 11 22 33 44 55 66")
    assert s.sent == [LIST, p.ACK, LIST]
    assert not d.core.listing


def test_without_renew_ms_a_silent_chip_is_waited_for_forever():
    d, s = driver([p.ACK])
    for _ in range(50):
        assert d.wait_target(200) is None
    assert s.sent == [LIST]


def test_a_reader_gone_is_found_out_when_its_wait_is_renewed():
    d, s = driver([p.ACK])
    for _ in range(5):
        assert d.wait_target(200, 2, 1000) is None
    expect_error(lambda: d.wait_target(200, 2, 1000), p.E_NO_ANSWER)
    assert s.sent == [LIST, p.ACK, LIST, LIST, LIST]  # sent again twice without an ACK


def test_a_half_received_answer_is_not_cut_by_a_renewal():
    frame = p.encode_frame(p.TFI_PN532, h("4B") + CARD)
    d, s = driver([p.ACK])
    for _ in range(4):
        assert d.wait_target(200, 2, 1000) is None
    s.rx += frame[:7]  # the chip's answer begins in the wait that reaches renew_ms
    assert d.wait_target(200, 2, 1000) is None and d.core.ticks() >= 1000
    s.rx += frame[7:]
    assert d.wait_target(200, 2, 1000).uid == h("04 11 22 33 44 55 66")
    assert s.sent == [LIST]


def test_a_reader_restarted_after_a_wait_cut_short_by_the_host_ends_that_wait_first():
    # The door's driver (AsyncPN532) sent InListPassiveTarget and then found no heap for the
    # read of its ACK (a MemoryError in the card task, which restarts the reader): the chip
    # may still be waiting for a card, and a PN532 takes no other command before a host ACK
    # frame ends that one. The restart ends it first.
    import asyncio

    from tests.clock import ManualClock
    from tests.pn532_script import Script

    class Starved(Script):
        starve = False

        async def drain(self):
            pass

        async def read(self, n, timeout_ms):
            if self.starve:
                self.starve = False
                raise MemoryError("memory allocation failed, allocating 64 bytes")
            return Script.read(self, n, timeout_ms)

    clock = ManualClock()
    s = Starved(clock, [p.ACK, b"", resp(h("15")), resp(h("33")), resp(h("03 32 01 06 07"))])
    d = p.AsyncPN532(s, clock=clock)

    async def go():
        s.starve = True
        try:
            await d.wait_target(200)
        except MemoryError:
            pass
        else:
            raise AssertionError("the read did not fail")
        assert s.sent == [h("00 00 FF 04 FC D4 4A 02 00 E0 00")]
        return await d.begin()

    assert asyncio.run(go()) == h("32 01 06 07")
    assert s.sent[1] == p.ACK and s.sent[2] == p.WAKEUP  # the pending wait ended, then the wake-up
