"""The door task's answer to a MemoryError (firmware/door_task.py), over random input histories
with one journaled event that finds no heap, against the same door with heap to spare:
nothing escapes a poll, the lock is released only in passage or fire or within an unlock window
of a grant (or REX press) made then, and once the inputs have stood still every alarm of the
door with heap is active and journaled. Apart: closer faults (their counts start again with the
fresh machine), and a door's held-open and forced alarms while its contact loop is faulted (its
position is unknown to a fresh machine: the sensor_tamper alarm says so, in both)."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from firmware.door import MemorySink
from firmware.door_task import DoorTask
from tests.door_board import Board
from wire import codes as ev

DOOR = {"debounce_ms": 20, "unlock_ms": 500, "prealarm_ms": 400, "held_open_ms": 800,
        "bounce_ms": 200, "deny_ms": 100}
RAISED_BY = {"forced_open": ev.FORCED_OPEN, "held_open_prealarm": ev.HELD_OPEN_PREALARM,
             "held_open": ev.HELD_OPEN, "sensor_tamper": ev.SENSOR_TAMPER,
             "device_tamper": ev.DEVICE_TAMPER, "power_lost": ev.POWER_LOST}


class Sink(MemorySink):
    def __init__(self, fail_at: int | None) -> None:
        super().__init__(10_000)
        self.calls = 0
        self.fail_at = fail_at

    def __call__(self, code: int, arg: int = 0, payload: bytes = b"", flags: int = 0) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise MemoryError("memory allocation failed, allocating 184 bytes")
        super().__call__(code, arg, payload, flags)


STEPS = st.lists(st.one_of(
    st.tuples(st.just("door_contact"), st.sampled_from(["closed", "open", "short", "cut"])),
    st.tuples(st.sampled_from(["rex", "tamper", "fire", "power"]), st.booleans()),
    st.tuples(st.sampled_from(["grant", "deny"]), st.none()),
    st.tuples(st.just("mode"), st.sampled_from(["normal", "passage", "lockdown"])),
    st.tuples(st.just("wait"), st.integers(10, 900)),
), max_size=25)


def _door(fail_at: int | None, fail_safe: bool) -> tuple[Board, DoorTask, Sink]:
    b = Board()
    sink = Sink(fail_at)
    cfg = dict(DOOR)
    cfg["fail_safe"] = fail_safe
    return b, DoorTask(b, {"door": cfg}, sink, None, {}), sink


def _do(b: Board, t: DoorTask, op: str, arg: object, grants: list[int] | None = None) -> None:
    if grants is not None and (op == "grant" or (op == "rex" and arg)):
        grants.append(b.clock.t)
    try:
        if op == "grant":
            t.grant("card")
        elif op == "deny":
            t.deny(1)
        elif op == "mode":
            t.set_mode(str(arg))
        elif op != "wait":
            getattr(b, op).v = arg
    except MemoryError:
        pass  # raised to the caller (the card task, a command): the door itself went on
    # A door is open or shut for longer than two debounces (a fresh machine, its debouncers
    # at rest, takes one to see it): a shorter blip could go unseen by it.
    wait = int(str(arg)) if op == "wait" else 50 if op == "door_contact" else 10
    for _ in range(0, wait, 10):
        t.step(b.clock.t)
        b.clock.t += 10


@settings(max_examples=300, deadline=None)
@given(steps=STEPS, fail_at=st.integers(1, 30), fail_safe=st.booleans())
# Found by this test in a full run: the door forced open, its first event without heap, then a
# grant before the restarted machine had been told the door was open: forced_open was lost.
@example(steps=[("door_contact", "open"), ("grant", None)], fail_at=1, fail_safe=False)
# Found by this test: a restart under way of a forced opening started its held-open clock
# again; a fire release due before the restarted clock ran out dropped the held-open alarm.
@example(steps=[("door_contact", "open"), ("door_contact", "open"), ("grant", None),
                ("wait", 681), ("fire", True)], fail_at=3, fail_safe=False)
def test_one_event_without_heap_loses_no_alarm_and_releases_no_lock(
        steps: list[tuple[str, object]], fail_at: int, fail_safe: bool) -> None:
    rb, ref, _ = _door(None, fail_safe)
    fb, door, sink = _door(fail_at, fail_safe)
    unlocked = not fail_safe  # the relay's value when the door is released
    grants: list[int] = []
    window = DOOR["unlock_ms"] + DOOR["debounce_ms"] + 10  # a REX press is debounced first

    def released_for_a_reason(b: Board, t: DoorTask) -> bool:
        if b.relay.v != unlocked or t.mode() in ("passage", "fire"):
            return True
        return any(b.clock.t - g <= window for g in grants)

    for op, arg in steps:
        _do(rb, ref, op, arg)
        _do(fb, door, op, arg, grants)
        assert released_for_a_reason(rb, ref), (op, arg)
        assert released_for_a_reason(fb, door), (op, arg)
    for _ in range(3):  # the inputs stand still: every timer runs out
        _do(rb, ref, "wait", 900)
        _do(fb, door, "wait", 900)
        assert released_for_a_reason(fb, door)
    failed = sink.calls >= fail_at
    assert door.status["door_out_of_memory"] == (1 if failed else 0)
    want = set(ref.machine.active_alarms()) - {"closer_fault"}
    if fb.door_contact.v in ("short", "cut"):
        want -= {"forced_open", "held_open", "held_open_prealarm"}
    have = set(door.machine.active_alarms())
    assert want <= have, (want, have)
    codes = sink.codes()
    for name in have - {"closer_fault"}:
        assert RAISED_BY[name] in codes, name
    assert door.mode() == ref.mode()
