# mpy-heapsize: 128K
# What the uplink sends of a journal record, under CPython and MicroPython alike (the uplink
# module brings asyncio and the MQTT client, more than the default 64K test heap).
from board.flashsim import FlashSim
from firmware.journal import Journal


def test_the_uplink_sends_a_card_reference_ending_in_zero_whole():
    from firmware.uplink import TimeBase, event_tuple

    j = Journal(FlashSim(path=None, block_size=1024, block_count=8))
    ref = b"\x11\x22\x33\x44\x55\x66\x77\x00"
    j.append(1, 0x01, 3, 1000, 0, 1, ref)
    ev = event_tuple(j.read(1, 1)[0], 3, TimeBase())
    assert ev[7] == "1122334455667700"
    assert ev[5] == 0x01  # the length nibble stays on the device
