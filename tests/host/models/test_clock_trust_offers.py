"""Property test of the door's clock trust (firmware/clock_trust.py) against a model: over any
sequence of signed and unsigned platform times, an unsigned time never moves a set clock nor
sets one before the last record, a signed one always sets it, and the door acts on a time
only once a signed one came."""

from hypothesis import given
from hypothesis import strategies as st

from firmware.clock_trust import TimeSync, is_trusted, trusted_time
from tests.clock import ManualClock

T0 = 1767225600


class BoardClock(ManualClock):
    trusted = False

    def set_time(self, epoch: int, trusted: bool = True) -> None:
        self.epoch = epoch
        self.trusted = trusted


offers = st.lists(st.tuples(st.integers(T0 - 10 * 86400, T0 + 800 * 86400).map(lambda s: s * 1000),
                            st.booleans()), max_size=20)


@given(floor=st.sampled_from([0, T0]), seq=offers)
def test_clock_trust_follows_the_model(floor: int, seq: list[tuple[int, bool]]) -> None:
    clock = BoardClock()
    sync = TimeSync(clock, floor)
    told: list[tuple[int, bool]] = []
    sync.listeners.append(lambda s, signed: told.append((s, signed)))
    epoch, trusted, refused, sets = None, False, 0, []
    for ms, signed in seq:
        secs = ms // 1000
        ok = signed or (epoch is None and not (floor and secs < floor))
        assert (sync.offer(ms, signed) == "") is ok
        if ok:
            epoch, trusted = secs, signed
            sets.append((secs, signed))
        else:
            refused += 1
        assert clock.epoch == epoch and bool(clock.trusted) is trusted
        assert trusted_time(clock) == (epoch if trusted else None)
        assert is_trusted(clock) is trusted
    assert told == sets and sync.refused == refused
