# Every board clock that runs on this interpreter wraps its ticks as MicroPython does, against
# the vectors ticks/ is checked with (tests/tick_vectors.py): the virtual and the
# ESP32 boards' on the unix port, the bare-metal board's under `--image mcu`.
import sys
import time

from tests.tick_vectors import check

P = time.ticks_add(0, -1) + 1
BOARD_CLOCKS = (("board.virtual", "Clock"), ("board.esp32_ref", "_Clock"),
                ("board.mcu_qemu", "Clock"))


def _clocks():
    found = []
    for module, name in BOARD_CLOCKS:
        try:
            __import__(module)
        except ImportError:  # the port lacks what the board needs (mps2, sockets)
            continue
        found.append(getattr(sys.modules[module], name)())
    return found


def test_every_board_clock_wraps_the_same_way():
    clocks = _clocks()
    assert clocks
    if sys.platform == "linux":  # the unix port runs both of these boards' modules
        assert len(clocks) >= 2
    for clock in clocks:
        check(clock.ticks_add, clock.ticks_diff, P)
        assert 0 <= clock.ticks_ms() < P
