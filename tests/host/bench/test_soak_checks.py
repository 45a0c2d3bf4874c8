"""The soak's own checks and options (host_tools/benchmarks/soak.py), without a door: its heap
option, its door timings, and the one-by-one check of the decisions stored at the platform.
The soak itself runs in tests/host/image/test_soak.py."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from host_tools.benchmarks import soak
from host_tools.benchmarks.soak import Decisions, SoakFailed, check_door_config, heap_option
from reference_platform.store import EventRow, Store
from wire import codes as ev
from wire.common import config_limits

REF = bytes.fromhex("0102030405060708")


def test_the_heap_is_the_goal_unless_the_option_names_one() -> None:
    assert heap_option({}) == soak.HEAP == "64K"
    assert heap_option({"DOORCTL_SOAK_HEAP": "72"}) == "72K"
    assert heap_option({"DOORCTL_SOAK_HEAP": " 80k "}) == "80K"


@pytest.mark.parametrize("bad", ["64M", "lots", "-64", "8", "99999", "6 4"])
def test_a_bad_heap_option_is_one_clear_line(bad: str) -> None:
    with pytest.raises(SoakFailed, match="DOORCTL_SOAK_HEAP=.*give the heap in KiB") as e:
        heap_option({"DOORCTL_SOAK_HEAP": bad})
    assert "\n" not in str(e.value)


def test_a_bad_heap_option_fails_the_soak_before_it_builds_the_image(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The option is read first: a typo costs no image build (minutes on a fresh tree)."""
    built: list[object] = []

    def build(*args: object, **kwargs: object) -> None:
        built.append(args)
        raise RuntimeError("the image was built")

    monkeypatch.setattr(soak, "build_unix32", build)
    monkeypatch.setenv("DOORCTL_SOAK_HEAP", "lots")
    out = soak.run(set(soak.FIGURES))
    assert built == []
    assert set(out) == set(soak.FIGURES)
    assert all(isinstance(e, SoakFailed) and "DOORCTL_SOAK_HEAP" in str(e) for e in out.values())


def test_the_soaks_door_timings_are_ones_commissioning_accepts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    check_door_config()
    assert all(config_limits(k)[0] <= v <= config_limits(k)[1] for k, v in soak.DOOR.items())
    monkeypatch.setitem(soak.DOOR, "unlock_ms", 300)
    with pytest.raises(SoakFailed, match="unlock_ms=300 is outside 500-60000"):
        check_door_config()


def _event(seq: int, code: int, arg: int = 0, data: bytes = b"") -> EventRow:
    return (seq, code, 1, 0, 0, 0, arg, data.hex())


def _checker(tmp_path: Path) -> tuple[Store, Decisions]:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    return store, Decisions(SimpleNamespace(store=store), REF)  # type: ignore[arg-type]


FOREIGN = ev.deny_code("auth_failed")


def test_decisions_in_the_swipes_order_pass_and_other_events_are_left_aside(tmp_path: Path) -> None:
    store, checks = _checker(tmp_path)
    store.store_events(soak.DEVICE, [_event(1, ev.BOOT), _event(2, ev.ACCESS_GRANTED, 1, REF),
                                     _event(3, ev.ACCESS_DENIED, FOREIGN),
                                     _event(4, ev.ACCESS_GRANTED, 1, REF)])
    checks.check()
    assert checks.count == 3
    store.store_events(soak.DEVICE, [_event(5, ev.ACCESS_DENIED, FOREIGN)])
    checks.check()
    assert checks.count == 4  # from where the last check ended, nothing counted twice


def test_a_read_cut_short_is_counted_apart_not_as_a_decision(tmp_path: Path) -> None:
    """The door journals a card_lost refusal and reads the card again: that read is the
    swipe's decision, and the next one keeps its place."""
    store, checks = _checker(tmp_path)
    store.store_events(soak.DEVICE, [_event(1, ev.ACCESS_GRANTED, 1, REF),
                                     _event(2, ev.ACCESS_DENIED, ev.deny_code("card_lost")),
                                     _event(3, ev.ACCESS_DENIED, FOREIGN),
                                     _event(4, ev.ACCESS_GRANTED, 1, REF)])
    checks.check()
    assert (checks.count, checks.cut_short) == (3, 1)

def test_only_what_is_stored_without_a_gap_is_checked(tmp_path: Path) -> None:
    store, checks = _checker(tmp_path)
    store.store_events(soak.DEVICE, [_event(1, ev.ACCESS_GRANTED, 1, REF),
                                     _event(3, ev.ACCESS_GRANTED, 1, REF)])  # 2 not yet there
    checks.check()
    assert checks.count == 1
    store.store_events(soak.DEVICE, [_event(2, ev.ACCESS_DENIED, FOREIGN)])
    checks.check()
    assert checks.count == 3


@pytest.mark.parametrize("events, why", [
    ([_event(1, ev.ACCESS_DENIED, FOREIGN)], "decision 1 .*the resident was refused"),
    ([_event(1, ev.ACCESS_GRANTED, 1, REF), _event(2, ev.ACCESS_GRANTED, 1, REF)],
     "decision 2 .*the stranger was let in"),
    ([_event(1, ev.ACCESS_GRANTED, 1, bytes(8))], "another reference than the resident's"),
    ([_event(1, ev.ACCESS_GRANTED, 1, REF), _event(2, ev.ACCESS_DENIED, FOREIGN),
      _event(3, ev.ACCESS_GRANTED, 1, REF), _event(4, ev.ACCESS_DENIED, ev.deny_code("lost"))],
     "decision 4 .*refused for lost, before for auth_failed"),
])
def test_a_wrong_decision_is_named_with_its_number(tmp_path: Path, events: list[EventRow],
                                                   why: str) -> None:
    store, checks = _checker(tmp_path)
    store.store_events(soak.DEVICE, events)
    with pytest.raises(SoakFailed, match=why):
        checks.check()


def test_a_door_out_of_memory_is_named_with_where_it_happened(tmp_path: Path) -> None:
    assert soak._memory_error(tmp_path) is None
    (tmp_path / "stderr.log").write_text(
        "Traceback (most recent call last):\n  File \"firmware/uplink.py\", line 556, in run\n"
        "MemoryError: memory allocation failed, allocating 184 bytes\n")
    assert soak._memory_error(tmp_path) == (
        "MemoryError: memory allocation failed, allocating 184 bytes at "
        "File \"firmware/uplink.py\", line 556, in run")


def test_a_recovered_memory_error_is_not_taken_for_one_that_stopped_the_door(
        tmp_path: Path) -> None:
    # The door logs the ones it recovered from on its console; only stderr.log's traceback
    # is a firmware that stopped.
    (tmp_path / "stderr.log").write_text("")
    assert soak._memory_error(tmp_path) is None


def test_a_stuck_soak_names_the_heap_trouble_the_door_recovered_from() -> None:
    # A whitelist piece refused no_memory reaches the platform as an incomplete transfer; the
    # soak's message says so with the door's latest such lines, and nothing when there were none.
    console = (b"100 ready\n101 uplink: refused door/v1/d/cache no_memory (further ones counted)\n"
               b"102 patrol: publish failed MemoryError('memory allocation failed',)\n"
               b"103 uplink: out of memory, reconnecting\n104 cards: granted\n"
               b"105 uplink: refused door/v1/d/cache no_memory (further ones counted)\n")
    lines = soak._recovered_lines(console)
    assert lines.split(" | ") == [
        "102 patrol: publish failed MemoryError('memory allocation failed',)",
        "103 uplink: out of memory, reconnecting",
        "105 uplink: refused door/v1/d/cache no_memory (further ones counted)"]
    assert soak._recovered_lines(b"100 ready\n104 cards: granted\n") == ""


def test_recovered_memory_errors_are_summed_over_the_boots() -> None:
    r = soak.Recovered()
    r.seen({"card_out_of_memory": 1, "door_out_of_memory": 0, "decisions": 40})
    r.seen({"card_out_of_memory": 2, "patrol": {"alarms": []}})
    r.boot_ended()  # a power cut: the next boot counts from 0 again
    r.seen({"card_out_of_memory": 1, "door_out_of_memory": 1})
    r.seen({})  # a reading without them does not lower the boot's counts
    r.boot_ended()
    r.boot_ended()  # nothing seen since: nothing added
    assert r.total == {"card_out_of_memory": 3, "door_out_of_memory": 1}


def test_a_recovered_memory_error_fails_the_heap_figure_and_is_reported() -> None:
    held = soak.SoakReport(heap="72K")
    assert held.oom_recovered == 0 and soak.heap_held(held) == 72
    starved = soak.SoakReport(heap="64K", recovered={"card_out_of_memory": 2,
                                                     "door_out_of_memory": 1})
    assert starved.oom_recovered == 3
    why = soak.heap_held(starved)
    assert isinstance(why, SoakFailed)
    assert str(why) == ("the 64K heap did not hold: the door recovered from 3 MemoryError(s) "
                        "(card_out_of_memory 2, door_out_of_memory 1); the other figures are "
                        "the run's")


def test_the_soak_asks_for_every_out_of_memory_count_the_firmware_keeps() -> None:
    # Asked for by name (the whole status may not fit the door's heap): a count the firmware
    # adds must be added to the soak's list, or its MemoryErrors would pass unseen.
    import re

    root = Path(__file__).resolve().parents[3]
    found = {m for f in (root / "firmware").glob("*.py")
             for m in re.findall(r'status\["(\w+_out_of_memory)"\]', f.read_text())}
    assert found and found == {k for k in soak.OOM_KEYS if k.endswith(soak.OOM_SUFFIX)}
    assert "refused" in soak.OOM_KEYS  # an MQTT message refused for want of heap


def test_a_message_refused_for_want_of_heap_counts_as_a_recovered_memory_error() -> None:
    assert soak.recovered_now({"refused": {"bad_mac": 2, "no_memory": 3},
                               "uplink_out_of_memory": 1}) == {
        "refused_no_memory": 3, "uplink_out_of_memory": 1}
    assert soak.recovered_now({"refused": {"bad_mac": 2}}) == {}


def test_a_stuck_swipe_says_what_the_door_recovered_from_meanwhile() -> None:
    class _IO:
        def __init__(self, status: dict[str, object] | Exception) -> None:
            self.reply = status

        def status(self, *keys: str) -> dict[str, object]:
            if isinstance(self.reply, Exception):
                raise self.reply
            return {k: v for k, v in self.reply.items() if k in keys}

    def said(reply: dict[str, object] | Exception) -> str:
        return soak.recovered_meanwhile(_IO(reply))  # type: ignore[arg-type]

    assert said({"card_out_of_memory": 1456, "door_out_of_memory": 0}) == (
        "; the door recovered from MemoryErrors meanwhile (card_out_of_memory 1456)")
    assert said({"card_out_of_memory": 0}) == ""
    assert said(ConnectionError("the I/O channel closed")) == ""


def test_a_stuck_soak_keeps_the_doors_logs_out_of_its_temporary_folder(tmp_path: Path) -> None:
    (tmp_path / "console.log").write_text("100 ready\n")
    kept = soak._keep_logs(tmp_path)
    try:
        assert kept != tmp_path and (kept / "console.log").read_text() == "100 ready\n"
        assert not (kept / "stderr.log").exists()  # none written: none invented
    finally:
        import shutil

        shutil.rmtree(kept)


def test_a_stuck_soak_keeps_the_console_the_device_holds_in_memory(tmp_path: Path) -> None:
    """The console is written to the state folder only when the device is asked for its last
    error: the soak hands over what it holds, or the kept folder had no console.log."""
    (tmp_path / "stderr.log").write_text("Traceback\n")
    kept = soak._keep_logs(tmp_path, b"100 ready\n200 uplink: connected\n")
    try:
        assert (kept / "console.log").read_bytes() == b"100 ready\n200 uplink: connected\n"
        assert (kept / "stderr.log").read_text() == "Traceback\n"
    finally:
        import shutil

        shutil.rmtree(kept)


class _Door:
    """The door's side of a swipe, played by hand: which card it releases, and its count."""

    def __init__(self, emu: soak.ReleaseWatch, decisions: int) -> None:
        self.emu, self.decisions = emu, decisions

    def status(self, *keys: str) -> dict[str, object]:
        return {"decisions": self.decisions, "heap_free": 9000, "reader": "idle"}

    def decide(self, card: object, counted: bool = True) -> None:
        self.emu._active = {1: card}
        if counted:
            self.decisions += 1
        self.emu._release(b"\x01")


def _card(uid: str) -> object:
    from host_tools.pn532_emu import LocalCard

    return LocalCard(lambda apdu: b"\x90\x00", bytes.fromhex(uid))


def test_a_swipe_is_decided_when_its_own_card_is_released_with_one_more_decision() -> None:
    import threading

    emu = soak.ReleaseWatch()
    door = _Door(emu, 7)
    card = _card("04a1b2c3d4e5f6")
    threading.Timer(0.05, door.decide, (card,)).start()
    assert soak._swipe(door, emu, card, 7)["decisions"] == 8  # type: ignore[arg-type]
    assert emu.released == [card.uid]  # type: ignore[attr-defined]


def test_a_decision_on_the_card_before_is_not_credited_to_the_card_presented(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A count that grew while only the card before was released, and no release of this
    card within the grace: the soak would present the next card to a door holding it as
    decided."""
    import threading

    monkeypatch.setattr(soak, "RELEASE_GRACE_S", 0.3)
    emu = soak.ReleaseWatch()
    door = _Door(emu, 7)
    before, card = _card("04000000000001"), _card("04000000000002")
    threading.Timer(0.05, door.decide, (before,)).start()
    with pytest.raises(SoakFailed, match="the card before decided again") as e:
        soak._swipe(door, emu, card, 7)  # type: ignore[arg-type]
    assert "releases since presented 1 (04000000000001)" in str(e.value)
    assert "door: decisions 8, reader idle" in str(e.value)


def test_a_stuck_swipe_says_what_the_reader_and_the_door_were_doing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(soak, "SWIPE_TIMEOUT_S", 0.2)
    emu = soak.ReleaseWatch()
    emu.commands.extend([0x4A, 0x4A, 0x52])
    door = _Door(emu, 3)
    with pytest.raises(SoakFailed, match=r"no decision within 0 s \(releases since presented 0; "
                                         r"reader's last commands 4A 4A 52; door: decisions 3"):
        soak._swipe(door, emu, _card("04000000000003"), 3)  # type: ignore[arg-type]


def test_a_decision_whose_release_comes_after_the_count_is_credited_to_its_card(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The door answers its status between deciding and releasing: the count can be seen
    grown on the late release of the card before, this card's own release still on the way."""
    import threading

    monkeypatch.setattr(soak, "RELEASE_GRACE_S", 2.0)
    emu = soak.ReleaseWatch()
    door = _Door(emu, 7)
    before, card = _card("04000000000001"), _card("04000000000002")

    def door_acts() -> None:
        door.decisions += 1  # this card decided, counted ...
        door.decide(before, counted=False)  # ... the late release of the card before seen ...
        time.sleep(0.2)
        door.decide(card, counted=False)  # ... then this card's own release

    threading.Timer(0.05, door_acts).start()
    assert soak._swipe(door, emu, card, 7)["decisions"] == 8  # type: ignore[arg-type]
