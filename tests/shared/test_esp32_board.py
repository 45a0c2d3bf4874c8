# The ESP32 reference board's pure parts: supervised door-contact decoding.
from board.esp32_ref import PINS, classify_contact


def _loop_mv(r_loop, pullup=10000.0, vcc_mv=3300.0):
    if r_loop is None:
        return vcc_mv
    return vcc_mv * r_loop / (pullup + r_loop)


def test_nominal_loop_states():
    assert classify_contact(_loop_mv(0)) == "short"
    assert classify_contact(_loop_mv(4700)) == "closed"
    assert classify_contact(_loop_mv(9400)) == "open"
    assert classify_contact(_loop_mv(None)) == "cut"


def test_resistor_tolerance_does_not_change_the_state():
    for tol in (0.95, 1.05):
        for pull in (9500.0, 10500.0):
            assert classify_contact(_loop_mv(4700 * tol, pull)) == "closed"
            assert classify_contact(_loop_mv(9400 * tol, pull)) == "open"
    assert classify_contact(_loop_mv(100)) == "short"  # a nearly shorted loop is tamper


def test_pins_are_unique():
    used = list(PINS.values())
    assert len(used) == len(set(used))
