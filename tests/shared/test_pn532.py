# mpy-heapsize: 96K
# PN532 frame codec and driver logic, on both interpreters: UM0701-02 frame vectors, the
# incremental parser's events, target parsing, and the blocking driver against scripted
# PN532 byte streams (a tick counter advanced by the stream stands in for time).
from card_reader import pn532 as p
from host_tools.pn532_sync import PN532
from tests.clock import ManualClock
from tests.pn532_script import Script, driver, expect_error, h, resp


def feed_all(parser, data):
    events = []
    for b in data:
        ev = parser.feed(b)
        if ev != p.EV_NONE:
            events.append(ev)
    return events


def test_encode_manual_vectors():
    assert p.encode_frame(p.TFI_HOST, b"\x02") == h("00 00 FF 02 FE D4 02 2A 00")
    assert p.encode_frame(p.TFI_HOST, h("14 01 14 01")) == h("00 00 FF 05 FB D4 14 01 14 01 02 00")
    assert p.encode_frame(p.TFI_HOST, h("4A 01 00")) == h("00 00 FF 04 FC D4 4A 01 00 E1 00")
    assert p.encode_frame(p.TFI_PN532, h("03 32 01 06 07")) == h("00 00 FF 06 FA D5 03 32 01 06 07 E8 00")


def test_parse_firmware_version_response():
    parser = p.FrameParser()
    assert feed_all(parser, h("00 00 FF 06 FA D5 03 32 01 06 07 E8 00")) == [p.EV_FRAME]
    assert bytes(parser.data[:parser.length]) == h("D5 03 32 01 06 07")


def test_ack_nack_error_frame_events():
    parser = p.FrameParser()
    assert feed_all(parser, p.ACK) == [p.EV_ACK]
    assert feed_all(parser, p.NACK) == [p.EV_NACK]
    assert feed_all(parser, p.ERROR_FRAME) == [p.EV_ERROR_FRAME]
    # an ACK then a response in one read
    both = p.ACK + h("00 00 FF 02 FE D5 15 16 00")
    assert feed_all(parser, both) == [p.EV_ACK, p.EV_FRAME]
    assert bytes(parser.data[:parser.length]) == h("D5 15")


def test_noise_and_wakeup_are_skipped():
    parser = p.FrameParser()
    noisy = p.WAKEUP + h("12 FF 34 00 00") + h("00 00 FF 02 FE D5 15 16 00")
    assert feed_all(parser, noisy) == [p.EV_FRAME]


def test_extended_frame_round_trip():
    data = bytearray(p.MAX_DATA - 1)
    for i in range(len(data)):
        data[i] = (i * 7) & 0xFF
    frame = p.encode_frame(p.TFI_PN532, data)
    assert frame[:5] == h("00 00 FF FF FF")
    n = len(data) + 1
    assert frame[5] == n >> 8 and frame[6] == n & 0xFF and (frame[5] + frame[6] + frame[7]) & 0xFF == 0
    parser = p.FrameParser()
    assert feed_all(parser, frame) == [p.EV_FRAME]
    assert parser.data[1:parser.length] == data


def test_normal_frame_round_trip_every_length():
    parser = p.FrameParser()
    for n in (0, 1, 2, 100, 253, 254):
        data = bytes([(i + n) & 0xFF for i in range(n)])
        frame = p.encode_frame(p.TFI_HOST, data)
        assert frame[3] == n + 1
        assert feed_all(parser, frame) == [p.EV_FRAME]
        assert parser.data[0] == p.TFI_HOST and bytes(parser.data[1:parser.length]) == data


def test_checksum_errors_and_bad_lengths():
    parser = p.FrameParser()
    assert feed_all(parser, h("00 00 FF 06 FB D5 03 32 01 06 07 E8 00")) == [p.EV_BAD_LCS]
    assert feed_all(parser, h("00 00 FF 06 FA D5 03 32 01 06 07 E9 00")) == [p.EV_BAD_DCS]
    assert feed_all(parser, h("00 00 FF FF FF 04 00 FC")) == [p.EV_TOO_LONG]
    assert feed_all(parser, h("00 00 FF FF FF 00 00 00")) == [p.EV_BAD_LEN]
    # after errors the parser still finds the next good frame
    assert feed_all(parser, h("00 00 FF 02 FE D5 15 16 00")) == [p.EV_FRAME]


def test_too_long_command_is_refused():
    try:
        p.encode_frame(p.TFI_HOST, bytes(p.MAX_DATA))
    except p.PN532Error as e:
        assert e.code == p.E_TOO_LONG and e.reason == "too_long"
    else:
        raise AssertionError("no error")


def test_parse_targets_desfire_classic_and_10_byte_uid():
    nb, t = p.parse_targets(h("01 01 03 44 20 07 04 11 22 33 44 55 66 06 75 77 81 02 80"))
    assert nb == 1 and t.tg == 1 and t.atqa == h("03 44") and t.sak == 0x20
    assert t.uid == h("04 11 22 33 44 55 66") and t.ats == h("06 75 77 81 02 80") and t.iso_dep()
    nb, t = p.parse_targets(h("01 01 00 04 08 04 92 2E 58 32"))
    assert nb == 1 and t.uid == h("92 2E 58 32") and t.ats == b"" and not t.iso_dep()
    nb, t = p.parse_targets(h("01 01 00 48 00 0A 01 02 03 04 05 06 07 08 09 0A"))
    assert len(t.uid) == 10
    assert p.parse_targets(b"\x00") == (0, None)
    nb, t = p.parse_targets(h("02 01 00 04 08 04 92 2E 58 32 02 00 04 08 04 01 02 03 04"))
    assert nb == 2 and t.uid == h("92 2E 58 32")


def test_parse_targets_rejects_bad_data():
    for bad in ("", "03", "01 01 00 04", "01 01 00 04 08 05 01 02 03 04 05",
                "01 01 03 44 20 04 01 02 03 04", "01 01 03 44 20 04 01 02 03 04 09 75",
                "01 01 00 04 08 04 92 2E 58 32 FF"):
        try:
            p.parse_targets(h(bad))
        except p.PN532Error as e:
            assert e.code == p.E_BAD_TARGET
        else:
            raise AssertionError(bad)


def test_begin_list_exchange_release():
    target = h("01 01 03 44 20 07 04 11 22 33 44 55 66 06 75 77 81 02 80")
    d, s = driver([resp(h("15")), resp(h("33")), resp(h("03 32 01 06 07")),
                   resp(h("4B") + target), resp(h("41 00 91 AF")), resp(h("53 00"))])
    assert d.begin() == h("32 01 06 07")
    assert s.sent[0] == p.WAKEUP
    assert s.sent[1] == h("00 00 FF 05 FB D4 14 01 14 01 02 00")
    # RFConfiguration MaxRetries: an empty field is reported at once, not waited on
    assert s.sent[2] == p.encode_frame(p.TFI_HOST, h("32 05 FF 01 02"))
    t = d.list_target()
    assert t.uid == h("04 11 22 33 44 55 66") and t.sak == 0x20
    assert s.sent[4] == h("00 00 FF 04 FC D4 4A 02 00 E0 00")
    assert d.transceive(h("90 60 00 00 00")) == h("91 AF")
    assert s.sent[5] == p.encode_frame(p.TFI_HOST, h("40 01 90 60 00 00 00"))
    assert d.release() == 0


def test_no_card_and_two_cards():
    d, s = driver([resp(h("4B 00"))])
    assert d.list_target() is None
    expect_error(lambda: d.exchange(b"\x00\xa4\x04\x00\x00"), p.E_NO_CARD)
    two = h("4B 02 01 00 04 08 04 92 2E 58 32 02 00 04 08 04 01 02 03 04")
    d, s = driver([resp(two), resp(h("53 00"))])
    expect_error(d.list_target, p.E_TWO_CARDS)
    assert s.sent[-1] == p.encode_frame(p.TFI_HOST, h("52 00"))  # both released


class Stalled(Script):
    """The PN532 answers at once, but the host runs late: every read it makes comes 80 ms
    after the last (its loop held up by a flash erase or a TLS handshake), and bytes come
    two at a time."""

    def read(self, n, timeout_ms):
        self.clock.t += 80
        return Script.read(self, min(n, 2), timeout_ms)


def test_a_late_host_takes_the_answer_that_came_instead_of_sending_again():
    """The ACK and answer were there before the deadline passed: the command is not sent
    again (an APDU sent twice runs twice on the card: a second AuthenticateEV2First part 1
    draws a new RndB and the authentication fails)."""
    clock = ManualClock()
    script = Stalled(clock, [resp(h("4B 01 01 00 04 08 04 92 2E 58 32")), resp(h("41 00 AA BB 91 AF"))])
    d = PN532(script, clock=clock)
    assert d.list_target().uid == h("92 2E 58 32")
    assert d.exchange(h("90 71 00 00 02 01 00 00")) == h("AA BB 91 AF")
    assert len(script.sent) == 2 and d.core.resends == 0


def test_a_timeout_still_comes_when_nothing_came():
    d, s = driver([b""])  # no ACK ever
    expect_error(d.firmware_version, p.E_NO_ANSWER)
    assert len(s.sent) == 1 + d.core.retries


def listed(replies):
    d, s = driver([resp(h("4B 01 01 00 04 08 04 92 2E 58 32"))] + replies)
    d.list_target()
    return d, s


def test_card_lost_and_card_errors():
    d, s = listed([resp(h("41 01"))])
    e = expect_error(lambda: d.exchange(b"\x00"), p.E_CARD_LOST)
    assert e.detail == 0x01
    expect_error(lambda: d.exchange(b"\x00"), p.E_NO_CARD)
    d, s = listed([resp(h("41 2B"))])
    expect_error(lambda: d.exchange(b"\x00"), p.E_CARD_LOST)
    d, s = listed([resp(h("41 02"))])
    assert expect_error(lambda: d.exchange(b"\x00"), p.E_CARD_ERROR).detail == 0x02


def test_more_information_parts_are_joined():
    d, s = listed([resp(h("41 40 01 02")), resp(h("41 00 03 90 00"))])
    assert d.exchange(b"\x00") == h("01 02 03 90 00")


def test_bad_checksum_is_answered_with_nack_then_recovers():
    good = p.encode_frame(p.TFI_PN532, h("03 32 01 06 07"))
    bad = good[:-2] + b"\x00" + good[-1:]
    d, s = driver([p.ACK + bad])
    # the NACK makes the stand-in send the good frame
    orig = s.write

    def write(buf):
        if bytes(buf) == p.NACK:
            s.sent.append(p.NACK)
            s.rx += good
            return 6
        return orig(buf)

    s.write = write
    assert d.firmware_version() == h("32 01 06 07")
    assert p.NACK in s.sent and d.core.resends == 1


def test_failures_are_pn532_errors():
    cases = [
        ([], p.E_NO_ANSWER),  # nothing at all
        ([p.ACK], p.E_NO_ANSWER),  # ACK, no response
        ([p.NACK, p.NACK, p.NACK], p.E_NO_ACK),  # refused every time
        ([p.ACK + p.ERROR_FRAME], p.E_ERROR_FRAME),
        ([p.ACK + p.encode_frame(p.TFI_HOST, h("03 32 01 06 07"))], p.E_WRONG_TFI),
        ([p.ACK + p.encode_frame(p.TFI_PN532, h("05 32 01 06 07"))], p.E_WRONG_RESPONSE),
        ([p.ACK + p.encode_frame(p.TFI_PN532, h("03 32"))], p.E_BAD_FRAME),
        ([p.ACK + h("00 00 FF FF FF 04 00 FC") + bytes(40)], p.E_TOO_LONG),
        ([p.ACK + h("00 00 FF 06 FA D5 03 32")], p.E_NO_ANSWER),  # truncated
        ([p.ACK + bytes([0x5A]) * 1000], p.E_BAD_FRAME),  # endless noise
    ]
    for replies, code in cases:
        d, s = driver(replies)
        expect_error(d.firmware_version, code)


def test_no_ack_is_retried_a_bounded_number_of_times():
    d, s = driver([b"", b"", resp(h("03 32 01 06 07"))])
    assert d.firmware_version() == h("32 01 06 07")
    assert len(s.sent) == 3 and d.core.resends == 2
    d, s = driver([])
    expect_error(d.firmware_version, p.E_NO_ANSWER)
    assert len(s.sent) == 1 + d.core.retries


def test_link_closed_is_not_connected():
    class Closed:
        def write(self, buf):
            return len(buf)

        def read(self, n, timeout_ms):
            return None

    expect_error(lambda: PN532(Closed()).firmware_version(), p.E_NOT_CONNECTED)


class Trickle(Script):
    """A reader gone wrong: it ACKs the command, then sends one junk byte (or, `acks`, one ACK
    frame) every 20 ms for ever."""

    def __init__(self, clock, acks=False):
        Script.__init__(self, clock, [p.ACK])
        self.acks = acks

    def read(self, n, timeout_ms):
        self.clock.t += 20
        if self.clock.t > 60000:
            raise AssertionError("still waiting after a minute")
        if self.rx:
            return Script.read(self, n, timeout_ms)
        return p.ACK if self.acks else b"\x11"


def test_a_reader_trickling_junk_cannot_hold_a_wait_past_its_timeout():
    clock = ManualClock()
    d = PN532(Trickle(clock), clock=clock)
    expect_error(lambda: d.list_target(1000), p.E_NO_ANSWER)
    assert clock.t < 1000 + 400, clock.t  # was 11 s (the noise limit counts bytes, not time)


def test_a_reader_sending_acks_for_ever_cannot_hold_an_exchange():
    clock = ManualClock()
    d = PN532(Trickle(clock, acks=True), clock=clock)
    d.core.tg = 1
    expect_error(lambda: d.exchange(h("90 60 00 00 00"), 1000), p.E_NO_ANSWER)
    assert clock.t < 1000 + 400, clock.t  # was for ever: each stray ACK began a new wait


def test_each_error_code_is_named_by_its_reason():
    names = [n for n in dir(p) if n.startswith("E_")]
    assert len(names) == len(p.REASONS) - 1
    for name in names:
        e = p.PN532Error(getattr(p, name), 0x27)
        assert e.reason == name[2:].lower(), name
        assert str(e) == "%s (0x27)" % e.reason
    for code in (0, 99, -1):
        assert p.PN532Error(code).reason == "error"
