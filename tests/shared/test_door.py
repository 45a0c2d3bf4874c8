# mpy-heapsize: 96K
# The door state machine, debouncing and patrol reports: runs under CPython and MicroPython.
# (96K: this file is compiled from source in the heap it runs in.)
import struct

from wire import codes as ev
from firmware.door import DoorMachine, MemorySink
from wire.codes import DENY_LOCKDOWN
from firmware.inputs import Debouncer, check_contact
from firmware.patrol import Patrol, build_report

CFG = {"unlock_ms": 5000, "prealarm_ms": 20000, "held_open_ms": 30000, "closer_limit_ms": 15000,
       "closer_slow_count": 3, "bounce_ms": 1500, "closer_bounce_count": 3}


def _machine(**over):
    cfg = dict(CFG)
    cfg.update(over)
    sink = MemorySink(limit=200)
    return DoorMachine(cfg, 0, sink), sink


def _pass(m, t, open_for=2000):
    """A card passage at t: grant, open 100 ms later, close after open_for."""
    m.grant(t, "card")
    m.input(t + 100, "door_contact", "open")
    m.input(t + 100 + open_for, "door_contact", "closed")


def test_grant_unlocks_and_relocks_at_window_end_when_never_opened():
    m, sink = _machine()
    assert m.lock == "locked"
    assert m.grant(1000, "card", ref=b"\x01\x02")
    assert m.lock == "unlocked" and m.led == "green"
    assert sink.events[-1] == (ev.ACCESS_GRANTED, 1, b"\x01\x02")
    assert m.next_deadline() == 6000
    m.tick(5999)
    assert m.lock == "unlocked"
    m.tick(6000)
    assert m.lock == "locked"
    assert m.next_deadline() is None


def test_relock_as_soon_as_the_door_closes():
    m, sink = _machine()
    m.input(0, "rex", True)
    assert sink.events[-1] == (ev.ACCESS_GRANTED, 2, b"")
    m.input(500, "door_contact", "open")
    assert m.lock == "unlocked"
    m.input(1500, "door_contact", "closed")
    assert m.lock == "locked"
    assert ev.FORCED_OPEN not in sink.codes()
    assert sink.codes() == [ev.ACCESS_GRANTED, ev.DOOR_OPENED, ev.DOOR_CLOSED]


def test_door_open_past_window_keeps_lock_locked_and_no_forced_alarm():
    m, sink = _machine()
    m.grant(0, "remote")
    m.input(1000, "door_contact", "open")
    m.tick(5000)
    assert m.lock == "locked"
    assert ev.FORCED_OPEN not in sink.codes()


def test_forced_open_once_per_episode_and_cleared_by_closing():
    m, sink = _machine()
    m.input(100, "door_contact", "open")
    assert m.door_state() == "forced_open"
    assert m.buzzer == "alarm" and m.led == "red"
    m.input(200, "rex", True)  # someone inside presses REX: no second alarm
    m.tick(300)
    assert sink.codes().count(ev.FORCED_OPEN) == 1
    m.input(1000, "door_contact", "closed")
    assert m.active_alarms() == [] and m.buzzer == "off"
    m.input(9000, "door_contact", "open")
    assert sink.codes().count(ev.FORCED_OPEN) == 2


def test_held_open_prealarm_alarm_and_cleared():
    m, sink = _machine()
    m.grant(0, "card")
    m.input(1000, "door_contact", "open")
    assert m.next_deadline() == 5000
    m.tick(20999)
    assert m.buzzer == "off"
    m.tick(21000)
    assert m.buzzer == "prealarm" and sink.codes()[-1] == ev.HELD_OPEN_PREALARM
    m.tick(31000)
    assert m.buzzer == "alarm" and sink.codes()[-1] == ev.HELD_OPEN
    assert m.door_state() == "held_open"
    m.tick(60000)
    assert sink.codes().count(ev.HELD_OPEN) == 1
    m.input(61000, "door_contact", "closed")
    assert sink.codes()[-2:] == [ev.DOOR_CLOSED, ev.HELD_OPEN_CLEARED]
    assert m.buzzer == "off"


def test_closing_before_held_open_sends_no_cleared_event():
    m, sink = _machine()
    _pass(m, 0, open_for=25000)  # past the pre-alarm, not the alarm
    assert ev.HELD_OPEN_PREALARM in sink.codes()
    assert ev.HELD_OPEN not in sink.codes() and ev.HELD_OPEN_CLEARED not in sink.codes()


def test_closer_fault_after_n_slow_closes_and_cleared_by_a_good_one():
    m, sink = _machine()
    t = 0
    for _ in range(2):
        _pass(m, t, open_for=16000)
        t += 40000
    assert ev.CLOSER_FAULT not in sink.codes()
    _pass(m, t, open_for=16000)
    assert sink.events.count((ev.CLOSER_FAULT, 1, b"")) == 1
    assert "closer_fault" in m.active_alarms()
    t += 40000
    _pass(m, t, open_for=3000)
    m.tick(t + 10000)
    assert sink.codes()[-1] == ev.CLOSER_FAULT_CLEARED
    assert "closer_fault" not in m.active_alarms()


def test_a_good_close_resets_the_slow_count():
    m, sink = _machine()
    t = 0
    for slow in (True, True, False, True, True):
        _pass(m, t, open_for=16000 if slow else 3000)
        t += 40000
    assert ev.CLOSER_FAULT not in sink.codes()


def test_bouncing_door_is_a_closer_fault():
    m, sink = _machine()
    _pass(m, 0)
    t = 2100
    for _ in range(3):
        m.input(t + 300, "door_contact", "open")  # bounced within 1.5 s of closing
        m.input(t + 600, "door_contact", "closed")
        t += 600
    assert sink.events.count((ev.CLOSER_FAULT, 2, b"")) == 1
    m.tick(t + 5000)
    assert sink.codes()[-1] == ev.CLOSER_FAULT_CLEARED


def test_reopening_after_settling_is_not_a_bounce():
    m, sink = _machine()
    t = 0
    for _ in range(5):
        _pass(m, t)
        t += 4000
    assert ev.CLOSER_FAULT not in sink.codes()


def test_sensor_short_and_cut_are_tamper_not_door_states():
    m, sink = _machine()
    m.input(0, "door_contact", "cut")
    assert m.door_state() == "sensor_cut"
    assert sink.events[-1] == (ev.SENSOR_TAMPER, 2, b"")
    m.input(100, "door_contact", "short")
    assert sink.codes().count(ev.SENSOR_TAMPER) == 1
    assert m.door_state() == "sensor_short"  # shown as the fault is now
    assert ev.DOOR_OPENED not in sink.codes() and ev.FORCED_OPEN not in sink.codes()
    m.input(200, "door_contact", "closed")
    assert sink.codes()[-1] == ev.SENSOR_TAMPER_CLEARED
    assert m.active_alarms() == []
    m.input(300, "door_contact", "short")
    assert sink.events[-1] == (ev.SENSOR_TAMPER, 1, b"")


def test_device_tamper_and_cleared():
    m, sink = _machine()
    m.input(0, "tamper", True)
    m.input(10, "tamper", True)
    assert sink.codes() == [ev.DEVICE_TAMPER]
    assert m.buzzer == "alarm"
    m.input(20, "tamper", False)
    assert sink.codes() == [ev.DEVICE_TAMPER, ev.DEVICE_TAMPER_CLEARED]


def test_power_lost_and_restored_with_duration_and_time_of_loss():
    sink = MemorySink()
    clock = [1767225600]
    m = DoorMachine(CFG, 0, sink, wall=lambda: clock[0])
    m.input(1000, "power", False)
    assert sink.codes() == [ev.POWER_LOST]
    m.input(62500, "power", True)
    code, arg, payload = sink.events[-1]
    assert code == ev.POWER_RESTORED
    assert struct.unpack("<II", payload) == (61, 1767225600)
    assert m.active_alarms() == []


def test_passage_mode_unlocks_and_still_reports():
    m, sink = _machine()
    m.set_mode(0, "passage")
    assert m.lock == "unlocked"
    assert sink.events[-1] == (ev.MODE_CHANGED, 1, b"")
    m.input(1000, "door_contact", "open")
    assert ev.FORCED_OPEN not in sink.codes() and ev.DOOR_OPENED in sink.codes()
    m.input(2000, "door_contact", "closed")
    assert m.lock == "unlocked"
    m.tick(100000)
    assert m.lock == "unlocked"
    m.set_mode(100000, "normal")
    assert m.lock == "locked"


def test_lockdown_refuses_all_but_master():
    m, sink = _machine()
    m.set_mode(0, "lockdown")
    assert not m.grant(10, "card", ref=b"\x07")
    assert sink.events[-1] == (ev.ACCESS_DENIED, DENY_LOCKDOWN, b"\x07")
    m.input(20, "rex", True)
    assert m.lock == "locked"
    assert m.grant(30, "card", master=True)
    assert m.lock == "unlocked"


def test_fire_input_releases_and_suspends_held_open():
    m, sink = _machine()
    m.input(0, "fire", True)
    assert m.effective_mode() == "fire" and m.lock == "unlocked"
    m.input(10, "door_contact", "open")
    m.tick(100000)
    assert ev.FORCED_OPEN not in sink.codes() and ev.HELD_OPEN not in sink.codes()
    m.input(100000, "fire", False)
    assert m.lock == "locked"
    m.tick(130000)
    assert ev.HELD_OPEN in sink.codes()


def test_fire_input_ignored_when_configured():
    m, sink = _machine(fire_from_input=False)
    m.input(0, "fire", True)
    assert m.lock == "locked"
    m.set_mode(10, "fire")
    assert m.lock == "unlocked"


def test_ticks_wrap_with_board_arithmetic():
    period = 1 << 30

    def diff(a, b):
        return ((a - b + period // 2) & (period - 1)) - period // 2

    def add(a, ms):
        return (a + ms) & (period - 1)

    m = DoorMachine(CFG, period - 1000, MemorySink(), diff=diff, add=add)
    m.grant(period - 1000, "card")
    m.tick(period - 1)
    assert m.lock == "unlocked"
    m.tick(3999)
    assert m.lock == "unlocked"
    m.tick(4000)
    assert m.lock == "locked"


def test_debouncer_needs_a_stable_reading():
    d = Debouncer(False, 50)
    assert not d.update(0, True)
    assert not d.update(40, False)  # a glitch
    assert not d.update(60, True)
    assert not d.update(100, True)
    assert d.update(110, True) and d.value is True
    assert not d.update(200, True)
    c = Debouncer("closed", 50)
    c.update(0, "open")
    c.update(30, "cut")
    assert not c.update(60, "cut")
    assert c.update(80, "cut") and c.value == "cut"
    assert check_contact("ajar") == "cut"


def test_patrol_report_fields_and_held_open_in_the_next_report():
    m, sink = _machine()
    p = Patrol(m, {"seq": lambda: 42, "cache_version": lambda: 7, "reader": lambda: "absent"},
               300000, 0)
    assert p.due(0)
    r = p.report(0)
    assert r["door"] == "closed" and r["alarms"] == [] and r["mode"] == "normal"
    assert r["lock"] == "locked" and r["seq"] == 42 and r["cache_version"] == 7
    assert r["reader"] == "absent"
    for key in ("journal_depth", "fw", "clock_synced", "uptime_s"):
        assert key in r
    assert not p.due(1000)
    m.grant(1000, "card")
    m.input(1100, "door_contact", "open")
    m.tick(31100)
    assert p.due(31100)
    r = p.report(31100)
    assert r["door"] == "held_open" and "held_open" in r["alarms"]
    assert not p.due(32000)
    assert p.due(331100)
    p.request()
    assert p.due(31200)


def test_patrol_survives_a_failing_provider():
    m, sink = _machine()

    def broken():
        raise OSError("no cache yet")

    r = build_report(m, {"cache_version": broken})
    assert r["cache_version"] is None


def test_a_provider_that_fails_keeps_its_last_reported_value_not_an_all_clear():
    # The setup provider imports firmware/setup_check.py again for each report (the door
    # drops it after use, firmware/main.py): a MemoryError there must not make the report say
    # the door's parts agree (an absent `setup`), or the platform ends its clock_unset alarm
    # while the door still refuses every card.
    m, sink = _machine()
    calls = [0]

    def setup():
        calls[0] += 1
        if calls[0] > 1:
            raise MemoryError("memory allocation failed, allocating 256 bytes")
        return ["clock_unset"]

    p = Patrol(m, {"setup": setup}, 300000, 0)
    assert p.report(0)["setup"] == ["clock_unset"]
    r = p.report(1000)
    assert calls[0] == 2 and r["setup"] == ["clock_unset"]


def test_a_door_left_open_when_passage_ends_raises_held_open():
    # Without held-open alarms in passage, the timers must start again when passage ends.
    m, sink = _machine(held_open_in_passage=False)
    m.set_mode(0, "passage")
    m.input(1000, "door_contact", "open")
    m.tick(40000)
    assert ev.HELD_OPEN not in sink.codes()
    m.set_mode(40000, "normal")  # the scheduled passage ends, the door is propped open
    m.tick(40000 + 29999)
    assert ev.HELD_OPEN not in sink.codes()
    m.tick(40000 + 30000)
    assert ev.HELD_OPEN in sink.codes() and "held_open" in m.active_alarms()


def test_no_closer_fault_for_a_door_bouncing_in_fire_mode():
    m, sink = _machine()
    m.input(0, "fire", True)
    t = 0
    for _ in range(5):  # people leaving: the door opens again right after it shuts
        m.input(t + 300, "door_contact", "open")
        m.input(t + 600, "door_contact", "closed")
        t += 600
    assert ev.CLOSER_FAULT not in sink.codes() and "closer_fault" not in m.active_alarms()


def test_uptime_goes_on_across_wrapping_ticks():
    from firmware.events import Uptime

    period = 1 << 30

    class Clock:
        ms = 0

        def ticks_ms(self):
            return self.ms % period

        def ticks_diff(self, a, b):
            return ((a - b + period // 2) % period) - period // 2

    clock = Clock()
    up = Uptime(clock)
    day = 86400 * 1000
    for d in range(1, 15):  # read once a day, as the door's polls do far more often
        clock.ms = d * day + 250
        assert up.split() == (d * 86400, 250)
        assert up.seconds() == d * 86400 and up.ms() == d * day + 250
