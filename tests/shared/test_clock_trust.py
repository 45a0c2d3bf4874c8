# When the door trusts its clock (firmware/clock_trust.py), both interpreters: which platform
# times may set it, what the door may act on, and that a refused time changes nothing.
from firmware.clock_trust import TimeSync, check_time, is_trusted, trusted_time
from tests.clock import ManualClock

T0 = 1767225600


class BoardClock(ManualClock):
    """ManualClock with the board's set_time: trusted only from a signed time."""

    trusted = False

    def set_time(self, epoch, trusted=True):
        self.epoch = epoch
        self.trusted = trusted


def test_an_unsigned_time_only_sets_an_unset_clock_and_a_signed_one_always_may():
    assert check_time(T0, False, 0) == ""  # an unset clock, for display
    assert check_time(T0 + 400 * 86400, True, 0) == "clock_set"  # never moves a set clock
    assert check_time(T0 - 10, False, T0) == "before_last_record"
    assert check_time(T0 - 86400, True, T0, signed=True) == ""  # a repair: back, below the floor
    assert check_time(T0 + 86400, True, T0, signed=True) == ""


def test_the_door_acts_on_a_trusted_time_only():
    clock = BoardClock()
    assert trusted_time(clock) is None and not is_trusted(clock)
    clock.set_time(T0, False)  # an unsigned time: shown, not acted on
    assert clock.time() == T0 and trusted_time(clock) is None and not is_trusted(clock)
    clock.set_time(T0 + 5, True)
    assert trusted_time(clock) == T0 + 5 and is_trusted(clock)


def test_an_unsigned_time_sets_an_unset_clock_once_untrusted_in_whole_seconds():
    clock = BoardClock()
    sync = TimeSync(clock, floor_s=T0 - 3600)
    seen = []
    sync.listeners.append(lambda s, signed: seen.append((s, signed)))
    assert sync.offer(T0 * 1000 + 999) == ""
    assert clock.epoch == T0 and isinstance(clock.epoch, int) and clock.trusted is False
    assert seen == [(T0, False)]
    # a retained message from far in the future, replayed later: the set clock stays
    assert sync.offer((T0 + 400 * 86400) * 1000) == "clock_set"
    assert clock.epoch == T0 and seen == [(T0, False)] and sync.refused == 1


def test_an_unsigned_time_before_the_last_record_is_refused_and_changes_nothing():
    clock = BoardClock()
    sync = TimeSync(clock, floor_s=T0)
    seen = []
    sync.listeners.append(lambda s, signed: seen.append(s))
    assert sync.offer((T0 - 1) * 1000) == "before_last_record"
    assert clock.epoch is None and not seen and sync.refused == 1
    assert sync.offer(T0 * 1000) == ""  # the floor itself is not before it
    assert clock.epoch == T0


def test_a_signed_time_repairs_a_wrong_clock_in_either_direction():
    clock = BoardClock()
    sync = TimeSync(clock, floor_s=T0)
    sync.offer((T0 + 400 * 86400) * 1000)  # wrong and unsigned
    assert sync.offer((T0 - 86400) * 1000, True) == ""  # back, below the floor
    assert clock.epoch == T0 - 86400 and is_trusted(clock)
    assert sync.offer((T0 + 60) * 1000, True) == ""
    assert clock.epoch == T0 + 60 and sync.refused == 0
    assert sync.offer((T0 + 120) * 1000) == "clock_set"  # unsigned: the trusted clock stays
    assert clock.epoch == T0 + 60 and is_trusted(clock)
