# mpy-heapsize: 144K
# What the uplink sends of a journal record, under CPython and MicroPython alike (the uplink
# module brings asyncio and the MQTT client, more than the default 64K test heap).
from board.vdev.flashsim import FlashSim
from firmware.journal import Journal


def test_the_uplink_sends_a_card_reference_ending_in_zero_whole():
    from firmware.uplink import TimeBase, event_tuple

    j = Journal(FlashSim(path=None, block_size=1024, block_count=8))
    ref = b"\x11\x22\x33\x44\x55\x66\x77\x00"
    j.append(1, 0x01, 3, 1000, 0, 1, ref)
    ev = event_tuple(j.read(1, 1)[0], 3, TimeBase())
    assert ev[7] == "1122334455667700"
    assert ev[5] == 0x01  # the length nibble stays on the device


def test_after_65536_boots_batches_still_decode_and_pre_clock_times_are_corrected():
    # The protocol's and the journal's boot counter is 16 bits; the board's count is not.
    from wire import common
    from wire.door import encode_events, encode_presence
    from wire.platform import decode_events, decode_presence
    from firmware.uplink import TimeBase, Uplink, event_tuple

    boot = 70000
    j = Journal(FlashSim(path=None, block_size=1024, block_count=8))
    j.append(1, 0, boot & 0xFFFF, 5, 0, 0)  # as the recorder stamps it: 5 s after boot, no clock
    up = Uplink(j, "door1", boot, "0", {"host": "127.0.0.1"})
    tb = TimeBase()
    tb.set(1700000000, 10)  # the clock arrives 10 s after boot
    ev = event_tuple(j.read(1, 1)[0], up.boot, tb)
    assert ev[5] & common.FLAG_TIME_CORRECTED and ev[3] == 1700000000 - 5
    batch = decode_events(encode_events(up.boot, [ev]))
    assert batch[0][0] == 1
    assert decode_presence(encode_presence(True, up.boot, "0"))["online"]


def test_a_time_stamped_by_an_untrusted_clock_keeps_its_flag_and_its_milliseconds():
    from firmware.events import Recorder
    from wire import codes as events
    from wire import common
    from wire.door import encode_events
    from wire.platform import decode_events
    from firmware.uplink import TimeBase, event_tuple

    class Clock:
        trusted = False

        def time(self):
            return 1767225600.25

        def ticks_ms(self):
            return 0

        def ticks_diff(self, a, b):
            return a - b

    j = Journal(FlashSim(path=None, block_size=1024, block_count=8))
    clock = Clock()
    rec = Recorder(j, clock, 3)
    rec.record(events.ACCESS_DENIED, 10, b"\x01")  # under a clock set by an unsigned time
    clock.trusted = True
    rec.record(events.ACCESS_GRANTED, 1, b"\x01")  # after a signed, fresh one
    ev = [event_tuple(r, 3, TimeBase()) for r in j.read(1, 2)]
    assert ev[0][5] == common.FLAG_TIME_VALID | common.FLAG_TIME_UNTRUSTED and ev[0][4] == 250
    assert ev[1][5] == common.FLAG_TIME_VALID and ev[1][4] == 250
    assert decode_events(encode_events(3, ev))[0][5] & common.FLAG_TIME_UNTRUSTED
