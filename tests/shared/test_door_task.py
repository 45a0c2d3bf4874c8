# mpy-heapsize: 96K
# The door task's binding on a fake board: debounce, relay polarity, buzzer pattern, LED,
# passage schedule, patrol status. Runs under CPython and MicroPython.
# (96K: the door task brings the event recorder and the journal module it builds on, and this
# file is compiled from source in the same heap.)
from wire import codes as ev
from firmware.door import MemorySink, in_schedule
from firmware.door_task import DoorTask, buzzer_on, relay_energised
from tests.door_board import Board


def _task(door=None, **cfg):
    b = Board(fire=False)  # no fire input fitted
    c = dict(cfg)
    c["door"] = door or {}
    sink = MemorySink(100)
    t = DoorTask(b, c, sink, None, {})
    return b, t, sink


def _run(b, t, until, step=10):
    while b.clock.t < until:
        t.poll(b.clock.t)
        b.clock.t += step
    t.poll(b.clock.t)


def test_rex_needs_debounce_then_unlocks_fail_secure():
    b, t, sink = _task({"debounce_ms": 50})
    _run(b, t, 1100)
    assert b.relay.v is False and b.led.v == "off" and b.buzzer.v is False
    b.rex.v = True
    _run(b, t, 1130)  # a 30 ms blip
    b.rex.v = False
    _run(b, t, 1300)
    assert b.relay.changes == [False]
    b.rex.v = True
    _run(b, t, 1400)
    assert b.relay.v is True and b.led.v == "green"
    assert sink.events[-1] == (ev.ACCESS_GRANTED, 2, b"")
    b.rex.v = False
    _run(b, t, 7000)
    assert b.relay.changes == [False, True, False]


def test_fail_safe_lock_is_energised_when_locked():
    assert relay_energised("locked", True) and not relay_energised("unlocked", True)
    assert relay_energised("unlocked", False) and not relay_energised("locked", False)
    b, t, sink = _task({"fail_safe": True})
    _run(b, t, 1100)
    assert b.relay.v is True
    t.grant("remote")
    assert b.relay.v is False


def test_buzzer_patterns():
    assert not buzzer_on("off", 0)
    assert buzzer_on("alarm", 0) and buzzer_on("alarm", 999)
    assert buzzer_on("prealarm", 100) and not buzzer_on("prealarm", 300)
    assert buzzer_on("prealarm", 1100)
    assert buzzer_on("deny", 0) and buzzer_on("deny", 99)
    assert not buzzer_on("deny", 100) and buzzer_on("deny", 200)
    assert not buzzer_on("no_such_pattern", 0) and not buzzer_on("no_such_pattern", 500)


def test_prealarm_beeps_then_held_open_alarm_and_patrol():
    b, t, sink = _task({"prealarm_ms": 2000, "held_open_ms": 4000, "debounce_ms": 20})
    t.grant("card")
    b.door_contact.v = "open"
    _run(b, t, 3500)
    beeps = b.buzzer.changes.count(True)
    assert beeps >= 1
    assert t.status["patrol"]["alarms"] == ["held_open_prealarm"]
    _run(b, t, 5500)
    assert b.buzzer.v is True and b.led.v == "red"
    assert t.status["patrol"]["door"] == "held_open"
    b.door_contact.v = "closed"
    _run(b, t, 6000)
    assert b.buzzer.v is False
    assert ev.HELD_OPEN_CLEARED in sink.codes()
    assert t.status["patrol"]["alarms"] == []


def test_unknown_contact_reading_is_a_cut_loop():
    b, t, sink = _task()
    b.door_contact.v = "ajar"
    _run(b, t, 1200)
    assert sink.events[-1] == (ev.SENSOR_TAMPER, 2, b"")


def test_passage_schedule_edges():
    assert in_schedule([[420, 540]], 420) and not in_schedule([[420, 540]], 540)
    assert in_schedule([[1380, 60]], 10) and in_schedule([[1380, 60]], 1400)
    assert not in_schedule([[1380, 60]], 600) and not in_schedule(None, 10)
    b, t, sink = _task({"passage_schedule": [[480, 600]], "tz_offset_min": 0})
    b.clock.epoch = 479 * 60
    _run(b, t, 2100)
    assert t.machine.mode == "normal"
    b.clock.epoch = 480 * 60
    _run(b, t, 3200)
    assert t.machine.mode == "passage" and b.relay.v is True
    t.set_mode("lockdown")  # a command wins over the schedule
    b.clock.epoch = 481 * 60
    _run(b, t, 4300)
    assert t.machine.mode == "lockdown"
    t.set_mode("passage")
    b.clock.epoch = 600 * 60
    _run(b, t, 5400)
    assert t.machine.mode == "passage"  # not the schedule's own passage any more


def test_schedule_ends_its_own_passage():
    b, t, sink = _task({"passage_schedule": [[480, 600]], "tz_offset_min": 0})
    b.clock.epoch = 500 * 60
    _run(b, t, 2100)
    assert t.machine.mode == "passage"
    b.clock.epoch = 600 * 60
    _run(b, t, 3200)
    assert t.machine.mode == "normal" and b.relay.v is False


def test_idle_and_busy_polls_do_not_allocate():
    # Under MicroPython the heap is locked: any allocation in a poll raises MemoryError.
    b, t, sink = _task({"debounce_ms": 20})
    b.door_contact.v = "open"  # forced open, alarm buzzer and all timers armed
    _run(b, t, 1500)
    try:
        import micropython
    except ImportError:
        micropython = None
    if micropython:
        micropython.heap_lock()
    try:
        for _ in range(200):
            t.poll(b.clock.t)
            b.clock.t += t.sleep_ms(b.clock.t) or 10
    finally:
        if micropython:
            micropython.heap_unlock()
    assert b.buzzer.v is True and t.machine.door_state() == "forced_open"


def test_platform_commands_for_the_door():
    b, t, sink = _task()
    assert t.command("open") == (True, "")
    assert b.relay.v is True and sink.events[-1] == (ev.ACCESS_GRANTED, 3, b"")
    assert t.command("mode", {"mode": "lockdown"}) == (True, "")
    assert t.machine.mode == "lockdown" and b.relay.v is False
    assert t.command("open") == (False, "lockdown")
    assert t.command("open", {"master": True}) == (True, "")
    assert t.command("mode", {"mode": "party"}) == (False, "bad_mode")
    assert t.command("reboot") == (False, "unknown_command")
    _run(b, t, 1100)
    n = t.patrol.count
    assert t.command("patrol") == (True, "")
    _run(b, t, 1200)
    assert t.patrol.count == n + 1


def test_a_long_job_serves_the_door_at_most_every_serve_ms_even_across_wrapped_ticks():
    from firmware.door_task import SERVE_MS

    b, t, sink = _task({"debounce_ms": 0})
    polls = []
    real = t.poll
    t.poll = lambda now: (polls.append(now), real(now))
    b.clock.t += SERVE_MS - 1
    t.serve()
    assert polls == []  # too soon after the task was made
    b.clock.t += 1
    t.serve()
    t.serve()
    assert polls == [1000 + SERVE_MS]
    b.rex.v = True  # a REX press during the job opens the door at the next serve
    b.clock.t += SERVE_MS
    t.serve()
    assert b.relay.v is True and len(polls) == 2
    b.clock.t -= 5 * SERVE_MS  # ticks behind the last serve: it is too long ago, serve now
    t.serve()
    assert len(polls) == 3


def test_the_patrol_report_takes_the_owner_values_first_then_the_status():
    # One provider callable for the owner's values (firmware/main.py), the rest from the status
    # the other tasks keep: no closure per field kept for as long as the door runs.
    from firmware.patrol import ABSENT

    calls = []

    def owner(key):
        calls.append(key)
        if key == "seq":
            return 41
        if key == "key_gen":
            raise KeyError("keystore")  # not there yet: the default, then its last value
        return ABSENT

    b = Board(fire=False)
    status = {"last_seq": 7, "journal_depth": 3, "cache_version": 9, "reader": "ok"}
    t = DoorTask(b, {"door": {}}, MemorySink(100), owner, status)
    r = t.patrol.report(0)
    assert r["seq"] == 41  # the owner's, not the status's 7
    assert (r["journal_depth"], r["cache_version"], r["reader"]) == (3, 9, "ok")
    assert r["key_gen"] is None and r["link"] is None and "setup" not in r
    assert "uptime_s" in r and r["clock_trusted"] is False
    assert "seq" in calls and "uptime_s" in calls  # asked first, for every field
    status["cache_version"] = 10
    assert t.patrol.report(1000)["cache_version"] == 10
