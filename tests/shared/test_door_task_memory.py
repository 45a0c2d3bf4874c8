# mpy-heapsize: 112K
# A MemoryError in the door task: at each step where it allocates (an event journaled from an
# input, from a timer, from a grant; the patrol report; a board input read), the failure
# leaves the lock locked, loses no alarm silently, is counted in the status, and the door goes
# on. Runs under CPython and MicroPython. (112K: the door task as in
# tests/shared/test_door_task.py, and this longer file compiled from source in the same heap.)
from wire import codes as ev
from firmware.door import MemorySink
from firmware.door_task import DoorTask
from tests.door_board import Board


class StarvedSink(MemorySink):
    """Journals events as the recorder does, but the `fail_at`-th one (1-based, counted from
    when it is armed) finds no heap: nothing of it is journaled."""

    def __init__(self):
        MemorySink.__init__(self, 200)
        self.calls = 0
        self.fail_at = None

    def __call__(self, code, arg=0, payload=b"", flags=0):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise MemoryError("memory allocation failed, allocating 184 bytes")
        MemorySink.__call__(self, code, arg, payload, flags)


def _task(fail_safe=False):
    b = Board()
    sink = StarvedSink()
    cfg = {"door": {"debounce_ms": 20, "prealarm_ms": 300, "held_open_ms": 600,
                    "fail_safe": fail_safe}}
    t = DoorTask(b, cfg, sink, None, {})
    _run(b, t, b.clock.t + 100)
    return b, t, sink


def _run(b, t, until, step=10):
    """The door task's loop, one poll at a time (DoorTask.run): nothing may escape a step."""
    while b.clock.t < until:
        t.step(b.clock.t)
        b.clock.t += step


def _arm(sink, nth):
    sink.calls = 0
    sink.fail_at = nth


def _codes_after(sink, n):
    return [e[0] for e in sink.events[n:]]


def test_a_poll_that_runs_out_of_heap_neither_escapes_nor_is_counted_twice():
    b, t, sink = _task()
    assert t.status["door_out_of_memory"] == 0  # there from the start: no allocation to count
    b.door_contact.v = "open"
    _arm(sink, 1)  # door_opened finds no heap
    _run(b, t, b.clock.t + 100)
    assert t.status["door_out_of_memory"] == 1 and t.out_of_memory == 1


def test_a_forced_opening_is_not_lost_whichever_of_its_events_finds_no_heap():
    # door_opened, forced_open, held_open_prealarm, held_open: each in its turn is the one
    # that fails; the door is forced open all along, and every alarm reaches the journal.
    for nth in range(1, 5):
        b, t, sink = _task()
        b.door_contact.v = "open"
        _arm(sink, nth)
        _run(b, t, b.clock.t + 1500)
        codes = sink.codes()
        assert t.status["door_out_of_memory"] == 1, nth
        for code in (ev.DOOR_OPENED, ev.FORCED_OPEN, ev.HELD_OPEN_PREALARM, ev.HELD_OPEN):
            assert code in codes, (nth, code, codes)
        assert t.machine.door_state() == "held_open", nth
        assert b.buzzer.v is True and b.led.v == "red" and b.relay.v is False, nth
        b.door_contact.v = "closed"
        _run(b, t, b.clock.t + 100)
        assert ev.HELD_OPEN_CLEARED in _codes_after(sink, len(codes)), nth
        assert t.machine.active_alarms() == [], nth


class TwiceStarvedSink(StarvedSink):
    """The `fail_at`-th event and the one after it find no heap."""

    def __call__(self, code, arg=0, payload=b"", flags=0):
        if self.fail_at is not None and self.calls == self.fail_at:  # the next one after it
            self.calls += 1
            raise MemoryError("memory allocation failed, allocating 184 bytes")
        StarvedSink.__call__(self, code, arg, payload, flags)


def test_a_restart_whose_own_first_event_finds_no_heap_is_told_at_the_next_poll():
    # door_opened fails (the restart), then the restart's own forced_open fails as well: the
    # task goes on with a fresh machine whose debouncers are at rest, told at the next poll.
    b = Board()
    sink = TwiceStarvedSink()
    t = DoorTask(b, {"door": {"debounce_ms": 20, "prealarm_ms": 300, "held_open_ms": 600}},
                 sink, None, {})
    _run(b, t, b.clock.t + 100)
    b.door_contact.v = "open"
    _arm(sink, 1)
    _run(b, t, b.clock.t + 1500)
    assert sink.calls >= 3 and t.status["door_out_of_memory"] == 1  # one restart, in two tries
    codes = sink.codes()
    for code in (ev.DOOR_OPENED, ev.FORCED_OPEN, ev.HELD_OPEN):
        assert code in codes, (code, codes)
    assert t.machine.door_state() == "held_open" and b.relay.v is False


def test_a_failure_during_an_unlock_window_relocks_at_once_for_either_lock():
    for fail_safe in (False, True):
        b, t, sink = _task(fail_safe)
        locked = fail_safe  # fail-safe locks are energised to lock
        t.grant("remote")
        assert b.relay.v is (not locked)
        b.door_contact.v = "open"
        _arm(sink, 1)  # the door_opened of the granted passage finds no heap
        n = len(sink.events)
        while sink.calls < 1:
            t.step(b.clock.t)
            b.clock.t += 10
        assert b.relay.v is locked, fail_safe  # relocked in the very poll that failed
        _run(b, t, b.clock.t + 100)
        assert b.relay.v is locked, fail_safe
        # The grant did not survive the restart: the open door is an opening nobody granted,
        # an alarm raised rather than one lost (in the restart itself, before any grant).
        assert ev.FORCED_OPEN in _codes_after(sink, n), fail_safe


def test_a_failure_in_fire_mode_keeps_the_door_released():
    b, t, sink = _task()
    b.fire.v = True
    _run(b, t, b.clock.t + 100)
    assert t.mode() == "fire" and b.relay.v is True
    b.tamper.v = True
    _arm(sink, 1)  # device_tamper finds no heap
    _run(b, t, b.clock.t + 100)
    assert t.status["door_out_of_memory"] == 1
    assert b.relay.changes[-1] is True and False not in b.relay.changes[b.relay.changes.index(True):]
    assert t.mode() == "fire"
    assert ev.DEVICE_TAMPER in sink.codes()


def test_a_commanded_mode_survives_the_restart():
    b, t, sink = _task()
    t.set_mode("lockdown")
    b.tamper.v = True
    _arm(sink, 1)
    _run(b, t, b.clock.t + 100)
    assert t.status["door_out_of_memory"] == 1 and t.mode() == "lockdown"
    assert ev.DEVICE_TAMPER in sink.codes()
    assert t.grant("card") is False and b.relay.v is False


def test_a_grant_that_finds_no_heap_raises_to_its_caller_and_leaves_the_door_locked():
    # The card task takes a MemoryError as "nothing decided, read again" (firmware/card_task.py).
    b, t, sink = _task()
    _arm(sink, 1)
    try:
        t.grant("card")
        raised = False
    except MemoryError:
        raised = True
    assert raised and b.relay.v is False and t.status["door_out_of_memory"] == 1
    assert t.grant("card") is True and b.relay.v is True
    assert sink.events[-1][0] == ev.ACCESS_GRANTED


def test_an_alarm_raised_by_a_grant_timer_is_not_lost():
    # The grant's own timers run first: the held-open alarm due then finds no heap.
    b, t, sink = _task()
    t.grant("card")
    b.door_contact.v = "open"
    _run(b, t, b.clock.t + 590)  # the prealarm raised, held-open due at +600
    assert ev.HELD_OPEN not in sink.codes()
    b.clock.t += 50
    _arm(sink, 1)
    try:
        t.grant("card")
    except MemoryError:
        pass
    _run(b, t, b.clock.t + 1000)
    assert ev.HELD_OPEN in sink.codes() and t.machine.door_state() == "held_open"
    assert b.buzzer.v is True


def test_a_restart_keeps_the_held_open_clock_of_the_opening_under_way():
    # Forced open, then a grant whose event finds no heap restarts the machine 400 ms into the
    # opening: the held-open alarm is still due 600 ms after the door opened, not after the
    # restart, so a fire release coming in between does not drop it; an alarm raised before a
    # restart is raised again by the fresh machine, whatever the mode.
    b, t, sink = _task()
    b.door_contact.v = "open"
    _run(b, t, b.clock.t + 400)
    opened = [e for e in sink.events if e[0] == ev.DOOR_OPENED]
    assert opened and ev.HELD_OPEN_PREALARM in sink.codes() and ev.HELD_OPEN not in sink.codes()
    _arm(sink, 1)
    try:
        t.grant("card")
    except MemoryError:
        pass
    assert t.status["door_out_of_memory"] == 1
    _run(b, t, b.clock.t + 150)  # the door seen open a debounce (20 ms) after the input
    assert ev.HELD_OPEN not in sink.codes()
    _run(b, t, b.clock.t + 100)  # 650 ms after the input: due (from the restart: at 1,000)
    assert ev.HELD_OPEN in sink.codes() and t.machine.door_state() == "held_open"
    b.fire.v = True
    _run(b, t, b.clock.t + 100)
    assert t.mode() == "fire" and "held_open" in t.machine.active_alarms()
    n = len(sink.events)
    _arm(sink, 1)  # a restart in fire mode, the door still open: held_open stays raised
    try:
        t.deny(1)
    except MemoryError:
        pass
    _run(b, t, b.clock.t + 50)
    assert t.status["door_out_of_memory"] == 2
    assert "held_open" in t.machine.active_alarms() and ev.HELD_OPEN in _codes_after(sink, n)


def test_a_patrol_report_that_finds_no_heap_is_made_at_the_next_poll():
    b, t, sink = _task()
    n = t.patrol.count
    machine = t.machine
    real = t.patrol.report
    calls = []

    def starved(now):
        calls.append(now)
        if len(calls) == 1:
            raise MemoryError("memory allocation failed, allocating 320 bytes")
        return real(now)

    t.patrol.report = starved
    t.patrol_now()
    _run(b, t, b.clock.t + 30)
    assert len(calls) >= 2 and t.patrol.count == n + 1
    assert t.status["patrol_out_of_memory"] == 1
    assert t.status["door_out_of_memory"] == 0 and t.machine is machine  # no restart needed


def test_an_input_read_that_finds_no_heap_costs_that_poll_only():
    b, t, sink = _task()
    b.rex.fail = 1
    b.rex.v = True
    _run(b, t, b.clock.t + 100)
    assert t.status["door_out_of_memory"] == 1
    assert b.relay.v is True and sink.events[-1][0] == ev.ACCESS_GRANTED


def test_no_heap_even_for_the_restart_stops_the_door_task_locked():
    # The last resort: the task ends (and the firmware with it; the ESP32 entry resets).
    b, t, sink = _task()
    t.grant("card")
    b.door_contact.v = "open"
    _arm(sink, 1)
    import firmware.door_task as dt

    real = dt.DoorMachine

    def no_heap(*a, **k):
        raise MemoryError("memory allocation failed, allocating 272 bytes")

    dt.DoorMachine = no_heap
    try:
        stopped = False
        try:
            _run(b, t, b.clock.t + 100)
        except MemoryError:
            stopped = True
        again = False
        try:
            t.step(b.clock.t)
        except MemoryError:
            again = True
    finally:
        dt.DoorMachine = real
    assert stopped and again and b.relay.v is False


def test_a_rex_button_held_through_a_restart_does_not_open_the_door_again():
    # REX is a press, not a state: re-fed to the fresh machine, a button stuck down would
    # release the lock at every restart with nobody pressing it.
    b, t, sink = _task()
    b.rex.v = True
    _run(b, t, b.clock.t + 100)
    assert sink.codes().count(ev.ACCESS_GRANTED) == 1
    _run(b, t, b.clock.t + 6000)  # the unlock window is over, the button still down
    assert b.relay.v is False
    b.tamper.v = True
    _arm(sink, 1)  # device_tamper finds no heap: the machine restarts
    _run(b, t, b.clock.t + 1000)
    assert t.status["door_out_of_memory"] == 1 and ev.DEVICE_TAMPER in sink.codes()
    assert sink.codes().count(ev.ACCESS_GRANTED) == 1 and b.relay.v is False


def test_a_grant_whose_relay_finds_no_heap_stands_and_is_driven_at_the_next_poll():
    """Journaled, the grant is made: raised to the card task, the card would be read and
    granted again (two records for one presentation). The relay is set at the next poll."""
    b, t, sink = _task()
    n = len(sink.events)
    b.relay.fail = 1
    assert t.grant("card", False, b"r" * 8) is True
    assert _codes_after(sink, n) == [ev.ACCESS_GRANTED]
    assert b.relay.v is False and t.status["door_out_of_memory"] == 0
    _run(b, t, b.clock.t + 20)
    assert b.relay.v is True and b.led.v == "green"
    assert _codes_after(sink, n) == [ev.ACCESS_GRANTED]


def test_a_refusal_whose_led_finds_no_heap_is_shown_at_the_next_poll():
    b, t, sink = _task()
    n = len(sink.events)
    b.led.fail = 1
    t.deny(ev.deny_code("lost"), b"r" * 8, 0)
    assert _codes_after(sink, n) == [ev.ACCESS_DENIED]
    _run(b, t, b.clock.t + 20)
    assert b.led.v == "red"
