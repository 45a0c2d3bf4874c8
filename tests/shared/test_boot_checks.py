# mpy-heapsize: 96K
# What the door works out at boot, both interpreters: its own power cut from the journal
# (firmware/power_loss.py) and the parts of its setup that disagree (firmware/setup_check.py).
from board.vdev.flashsim import FlashSim
from firmware import setup_check
from firmware.journal import Journal
from wire.common import FLAG_TIME_VALID
from firmware.power_loss import last_alive, outage
from tests.clock import ManualClock

T0 = 1767225600


def _journal():
    return Journal(FlashSim(path=None, block_size=1024, block_count=8))


def test_last_alive_is_the_last_record_before_this_boot():
    j = _journal()
    assert last_alive(j) == (False, 0)  # a first boot
    j.append(1, 0, 1, 40, 0, 0)  # before the clock was set: uptime, no valid time
    assert last_alive(j) == (True, 0)
    j.append(1, FLAG_TIME_VALID, 1, T0, 0, 0)
    assert last_alive(j) == (True, T0)


def test_an_outage_is_reported_after_a_power_up_only():
    assert outage(False, 0, "power", T0) is None  # first boot: nothing was lost
    assert outage(True, T0, "reset", T0 + 99) is None  # a reset, not a power cut
    assert outage(True, T0, "power", T0 + 99) == 99
    assert outage(True, T0, None, T0 + 99) == 99  # the board cannot tell: a power-up
    assert outage(True, T0, "power", None) == 0  # the clock did not survive: unknown
    assert outage(True, 0, "power", T0) == 0  # the last record had no time: unknown


class Keys:
    def __init__(self, site_id=7, scope="site", device=None):
        self.site_id, self.scope, self.device = site_id, scope, device


class Cache:
    def __init__(self, error):
        self.error = error


def test_a_commissioned_doors_disagreeing_parts_are_named():
    cfg = {"device_id": "d1", "site_id": 7}
    assert setup_check.problems({"device_id": "d1"}, None, None) == []  # not commissioned
    assert setup_check.problems(cfg, Keys(), Cache("")) == []
    assert setup_check.problems(cfg, Keys(), Cache("no_cache")) == []  # none pushed yet
    assert setup_check.problems(cfg, None, None) == ["no_keys"]
    assert setup_check.problems(cfg, Keys(8), Cache("bad_signature")) == \
        ["keys_site", "whitelist_refused"]
    assert setup_check.problems(cfg, Keys(7, "door", "d2"), None) == ["keys_door"]
    assert setup_check.problems(cfg, Keys(7, "door", "d1"), None) == []


def test_the_fault_record_carries_one_bit_per_problem():
    assert setup_check.fault_bits([]) == 0
    every = ["keys_site", "no_keys", "whitelist_refused", "keys_door"]
    bits = setup_check.fault_bits(every)
    assert bits == 1 | 2 | 4 | 8  # docs/protocol.md, setup_fault
    assert [setup_check.fault_bits([p]) for p in every] == [1, 2, 4, 8]


def test_the_clock_is_a_problem_until_it_holds_a_trusted_time():
    clock = ManualClock()
    assert setup_check.with_clock(None, clock) == ["clock_unset"]
    clock.epoch = T0
    assert setup_check.with_clock(["no_keys"], clock) == ["no_keys"]
    clock.trusted = False  # set from an unsigned time
    found = ["no_keys"]
    assert setup_check.with_clock(found, clock) == ["no_keys", "clock_unset"]
    assert found == ["no_keys"]  # the boot's list is not changed
