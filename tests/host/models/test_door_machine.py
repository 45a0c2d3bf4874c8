"""The door state machine against a reference model, over random interleavings of inputs,
grants, modes and clock steps (hypothesis stateful testing)."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from firmware.door import DoorMachine
from wire import codes as ev
from wire.codes import DENY_LOCKDOWN

CFG = {"unlock_ms": 5000, "prealarm_ms": 8000, "held_open_ms": 12000, "closer_limit_ms": 6000,
       "closer_slow_count": 3, "bounce_ms": 1500, "closer_bounce_count": 3, "deny_ms": 1000}
RELEASED = ("passage", "fire")
PAIRS = ((ev.SENSOR_TAMPER, ev.SENSOR_TAMPER_CLEARED), (ev.DEVICE_TAMPER, ev.DEVICE_TAMPER_CLEARED),
         (ev.POWER_LOST, ev.POWER_RESTORED), (ev.CLOSER_FAULT, ev.CLOSER_FAULT_CLEARED))


class DoorModel(RuleBasedStateMachine):
    """Keeps its own account of what the machine must do, from the inputs alone."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.log: list[tuple[int, int, int]] = []
        self.m = DoorMachine(CFG, 0, self._sink)
        # model
        self.deny_until: int | None = None  # refused-card indication (red LED, deny beeps)
        self.cmode = "normal"
        self.fire_in = False
        self.contact = "closed"
        self.door = "closed"
        self.window_until: int | None = None
        self.episode: dict[str, Any] | None = None
        self.held_start: int | None = None
        self.slow_deadline: int | None = None
        self.slow_count = 0
        self.last_close: int | None = None
        self.bounces = 0
        self.closer_fault = False
        self.mark = 0  # log index before the current step
        self.held_start_at_step: int | None = None
        self.expect_fault: tuple[int, int] | None = None  # closer event the model expects now

    def _sink(self, code: int, arg: int = 0, payload: bytes = b"") -> None:
        self.log.append((self.now, code, arg))

    def eff(self) -> str:
        return "fire" if self.cmode == "fire" or self.fire_in else self.cmode

    def new(self) -> list[tuple[int, int, int]]:
        return self.log[self.mark:]

    def new_codes(self) -> list[int]:
        return [e[1] for e in self.new()]

    # -- the model's timers, processed before each step's input, as the machine does --

    def _advance(self, dt: int) -> None:
        self.mark = len(self.log)
        self.now += dt
        self.held_start_at_step = self.held_start
        now = self.now
        if self.window_until is not None and now >= self.window_until:
            self.window_until = None
        if self.deny_until is not None and now >= self.deny_until:
            self.deny_until = None
        if self.slow_deadline is not None and now >= self.slow_deadline:
            self.slow_deadline = None
            self.slow_count += 1
            if self.slow_count >= CFG["closer_slow_count"] and not self.closer_fault:
                self.closer_fault = True
                self.expect_fault = (ev.CLOSER_FAULT, 1)
        if self.last_close is not None and now - self.last_close >= CFG["bounce_ms"]:
            self.last_close = None
            self.bounces = 0
            if self.closer_fault and self.slow_count == 0:
                self.closer_fault = False
                self.expect_fault = (ev.CLOSER_FAULT_CLEARED, 0)

    def _mode_change(self, before: str) -> None:
        after = self.eff()
        if after == before:
            return
        if self.door == "open" and after in RELEASED and self.episode is not None:
            self.episode["authorized"] = True
        if after == "lockdown":
            self.window_until = None
        if after == "fire":
            self.held_start = None
            self.slow_deadline = None
        elif before == "fire" and self.door == "open":
            self.held_start = self.now

    def _open(self) -> None:
        now = self.now
        self.door = "open"
        if self.last_close is not None:
            self.last_close = None
            if self.eff() != "fire":  # no closer judgement in fire mode (docs/door.md)
                self.bounces += 1
            if self.bounces >= CFG["closer_bounce_count"] and not self.closer_fault:
                self.closer_fault = True
                self.expect_fault = (ev.CLOSER_FAULT, 2)
        authorized = self.window_until is not None or self.eff() in RELEASED
        self.episode = {"authorized": authorized, "forced_expected": not authorized, "held": 0,
                        "forced": 0, "prealarm": 0}
        self.held_start = None if self.eff() == "fire" else now
        self.slow_deadline = now + CFG["closer_limit_ms"] if authorized and self.eff() != "fire" else None

    def _close(self) -> None:
        self.door = "closed"
        if self.slow_deadline is not None:
            self.slow_count = 0
        self.slow_deadline = None
        self.held_start = None
        self.window_until = None  # the grant is used up
        self.last_close = self.now

    # -- rules --------------------------------------------------------------------------

    dts = st.one_of(st.integers(0, 300), st.integers(0, 20000))

    @rule(dt=dts, value=st.sampled_from(["closed", "open", "open", "closed", "short", "cut"]))
    def contact_input(self, dt: int, value: str) -> None:
        self.expect_fault = None
        self._advance(dt)
        was_door, was_episode = self.door, self.episode
        self.contact = value
        if value in ("open", "closed"):
            if value == "open" and self.door == "closed":
                self._open()
            elif value == "closed" and self.door == "open":
                self._close()
        self.m.input(self.now, "door_contact", value)
        codes = self.new_codes()
        if was_door == "closed" and self.door == "open":
            assert ev.DOOR_OPENED in codes
            assert self.episode is not None
            assert codes.count(ev.FORCED_OPEN) == (1 if self.episode["forced_expected"] else 0)
        elif was_door == "open" and self.door == "closed":
            assert ev.DOOR_CLOSED in codes
            assert was_episode is not None
            held = was_episode["held"] + codes.count(ev.HELD_OPEN)
            assert codes.count(ev.HELD_OPEN_CLEARED) == (1 if held else 0)
            assert codes.index(ev.DOOR_CLOSED) < len(codes)
        else:
            assert ev.DOOR_OPENED not in codes and ev.DOOR_CLOSED not in codes
        self._after()

    @rule(dt=dts, kind=st.sampled_from(["card", "remote"]), master=st.booleans())
    def grant(self, dt: int, kind: str, master: bool) -> None:
        self.expect_fault = None
        self._advance(dt)
        ok_expected = self.eff() != "lockdown" or master
        ok = self.m.grant(self.now, kind, master)
        self._granted(ok, ok_expected)

    @rule(dt=dts, reason=st.integers(1, 40))
    def deny(self, dt: int, reason: int) -> None:
        """A refused card: journaled with its reason, shown at the door, the lock untouched."""
        self.expect_fault = None
        self._advance(dt)
        self.m.deny(self.now, reason, b"r" * 8)
        self.deny_until = self.now + CFG["deny_ms"]
        new = [(e[1], e[2]) for e in self.new()]  # timers due by now fire first
        assert new[-1] == (ev.ACCESS_DENIED, reason) and self.new_codes().count(ev.ACCESS_DENIED) == 1
        self._after()

    def _granted(self, ok: bool, ok_expected: bool) -> None:
        assert ok == ok_expected
        self.deny_until = None if ok else self.now + CFG["deny_ms"]
        if ok:
            self.window_until = self.now + CFG["unlock_ms"]
            if self.door == "open" and self.episode is not None:
                self.episode["authorized"] = True
            assert ev.ACCESS_GRANTED in self.new_codes()
        else:
            assert (ev.ACCESS_DENIED, DENY_LOCKDOWN) in [(e[1], e[2]) for e in self.new()]
        self._after()

    @rule(dt=dts)
    def rex_press(self, dt: int) -> None:
        self.expect_fault = None
        self._advance(dt)
        ok_expected = self.eff() != "lockdown"
        self.m.input(self.now, "rex", True)
        self.m.input(self.now, "rex", False)
        self._granted(ok_expected, ok_expected)

    @rule(open_for=st.integers(0, 12000), master=st.booleans())
    def card_passage(self, open_for: int, master: bool) -> None:
        """A whole passage: card, door opened, door shut by the closer after open_for ms."""
        self.grant(100, "card", master)
        self.contact_input(100, "open")
        self.contact_input(open_for, "closed")

    @rule(dt=dts, value=st.booleans())
    def tamper(self, dt: int, value: bool) -> None:
        self.expect_fault = None
        self._advance(dt)
        self.m.input(self.now, "tamper", value)
        self._after()
        assert ("device_tamper" in self.m.active_alarms()) == value

    @rule(dt=dts, value=st.booleans())
    def power(self, dt: int, value: bool) -> None:
        self.expect_fault = None
        self._advance(dt)
        self.m.input(self.now, "power", value)
        self._after()
        assert ("power_lost" in self.m.active_alarms()) == (not value)

    @rule(dt=dts, value=st.booleans())
    def fire(self, dt: int, value: bool) -> None:
        self.expect_fault = None
        self._advance(dt)
        before = self.eff()
        self.fire_in = value
        self._mode_change(before)
        self.m.input(self.now, "fire", value)
        self._after()

    @rule(dt=dts, mode=st.sampled_from(["normal", "passage", "lockdown", "fire"]))
    def set_mode(self, dt: int, mode: str) -> None:
        self.expect_fault = None
        self._advance(dt)
        before = self.eff()
        self.cmode = mode
        self._mode_change(before)
        self.m.set_mode(self.now, mode)
        assert (ev.MODE_CHANGED in self.new_codes()) == (self.eff() != before)
        self._after()

    @rule(dt=st.integers(0, 40000))
    def wait(self, dt: int) -> None:
        self.expect_fault = None
        self._advance(dt)
        self.m.tick(self.now)
        self._after()

    @precondition(lambda self: self.m.next_deadline() is not None)
    @rule(extra=st.integers(-1, 1))
    def wait_for_deadline(self, extra: int) -> None:
        """Step to exactly the machine's next deadline (or 1 ms either side)."""
        dl = self.m.next_deadline()
        assert dl is not None
        assert dl >= self.now  # a deadline is never left in the past after a step
        self.expect_fault = None
        self._advance(max(0, dl - self.now + extra))
        self.m.tick(self.now)
        self._after()

    # -- checks after every step ---------------------------------------------------------

    def _after(self) -> None:
        m, now, codes = self.m, self.now, self.new_codes()
        # Held-open: once per episode, only after the configured time, at the door (buzzer).
        if self.episode is not None:
            ep = self.episode
            ep["held"] += codes.count(ev.HELD_OPEN)
            ep["forced"] += codes.count(ev.FORCED_OPEN)
            ep["prealarm"] += codes.count(ev.HELD_OPEN_PREALARM)
            assert ep["held"] <= 1 and ep["forced"] <= 1 and ep["prealarm"] <= 1
            if self.door == "open":
                hs = self.held_start
                if hs is not None and now - hs >= CFG["held_open_ms"]:
                    assert "held_open" in m.active_alarms() and m.buzzer == "alarm"
                if ev.HELD_OPEN in codes:
                    hs = self.held_start_at_step
                    assert hs is not None and now - hs >= CFG["held_open_ms"]
            if self.door == "closed":
                self.episode = None
        else:
            assert ev.HELD_OPEN not in codes and ev.FORCED_OPEN not in codes
        # Closer fault: raised and cleared exactly when the model says so.
        want = self.expect_fault
        got = [(e[1], e[2]) for e in self.new() if e[1] in (ev.CLOSER_FAULT, ev.CLOSER_FAULT_CLEARED)]
        assert got == ([want] if want else []), (got, want)
        assert ("closer_fault" in m.active_alarms()) == self.closer_fault
        # Sensor tamper follows the supervised loop.
        assert ("sensor_tamper" in m.active_alarms()) == (self.contact in ("short", "cut"))
        assert m.effective_mode() == self.eff()

    @invariant()
    def lock_never_unlocked_beyond_its_window(self) -> None:
        released = self.eff() in RELEASED
        window = self.window_until is not None and self.now < self.window_until
        assert (self.m.lock == "unlocked") == (released or window)

    @invariant()
    def raise_and_clear_alternate(self) -> None:
        for raise_code, clear_code in PAIRS:
            seq = [e[1] for e in self.log if e[1] in (raise_code, clear_code)]
            assert all(seq[i] == (raise_code if i % 2 == 0 else clear_code) for i in range(len(seq)))

    @invariant()
    def outputs_follow_alarms(self) -> None:
        alarms = self.m.active_alarms()
        loud = {"forced_open", "held_open", "sensor_tamper", "device_tamper"}
        if loud & set(alarms):
            assert self.m.buzzer == "alarm" and self.m.led == "red"
        elif "held_open_prealarm" in alarms:
            assert self.m.buzzer == "prealarm"
        else:
            assert self.m.buzzer == ("deny" if self.deny_until is not None else "off")
            if "closer_fault" not in alarms:
                want = "green" if self.m.lock == "unlocked" else ("red" if self.deny_until else "off")
                assert self.m.led == want


DoorModel.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestDoorModel = DoorModel.TestCase
