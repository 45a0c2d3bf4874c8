# The ESP32 reference board's pure parts: supervised door-contact decoding and the pin map.
from board.esp32_ref import (
    ADC1,
    CONTACT_THRESHOLDS_MV,
    INPUT_ONLY,
    OUTPUTS,
    PINS,
    RESERVED,
    classify_contact,
    contact_state,
    median,
)


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


def test_a_saturated_adc_reads_as_a_cut_wire():
    # At 11 dB attenuation the ESP32 ADC saturates near 3.1 V: still "cut".
    assert classify_contact(3100) == "cut"
    assert classify_contact(CONTACT_THRESHOLDS_MV[2]) == "cut"
    assert classify_contact(CONTACT_THRESHOLDS_MV[2] - 1) == "open"


def test_thresholds_can_be_set_for_other_loops():
    # e.g. 2.2 kOhm EOL resistors: closed ~ 595 mV, open ~ 1010 mV
    t = (300, 800, 2000)
    assert classify_contact(595, t) == "closed"
    assert classify_contact(1010, t) == "open"
    assert classify_contact(100, t) == "short"
    assert classify_contact(2500, t) == "cut"


def test_median_of_readings():
    assert median([5]) == 5
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2
    try:
        median([])
    except ValueError:
        pass
    else:
        raise AssertionError("median of nothing must fail")


def test_a_single_spike_does_not_change_the_state():
    closed = int(_loop_mv(4700))
    assert contact_state([closed, closed, 3300, closed - 5, closed + 5]) == "closed"
    assert contact_state([closed, 0, closed, closed, 2000]) == "closed"
    assert contact_state([3300, 3300, closed, 3300, 3300]) == "cut"


def test_pins_are_unique():
    used = list(PINS.values())
    assert len(used) == len(set(used))


def test_pin_map_respects_the_module():
    for name, gpio in PINS.items():
        assert gpio not in RESERVED, name
    for name in OUTPUTS:
        assert PINS[name] not in INPUT_ONLY, name
    assert PINS["contact_adc"] in ADC1
    # Inputs that rely on the internal pull-up must not sit on input-only pins.
    for name in ("rex", "tamper"):
        assert PINS[name] not in INPUT_ONLY, name
