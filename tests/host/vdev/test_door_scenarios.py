"""Door scenarios on the virtual device, through its I/O channel: the real firmware drives the
relay, buzzer and LED; timestamps are the device's ticks, checked against the configured
times with generous tolerances."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from wire import codes as ev

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))
DOOR = {"unlock_ms": 1500, "prealarm_ms": 1500, "held_open_ms": 3000, "closer_limit_ms": 2500,
        "bounce_ms": 300, "debounce_ms": 30, "poll_ms": 10}
SLACK_MS = 1000  # scheduling slack allowed on the late side of every timing


def mpremote(dev: VirtualDevice, code: str) -> str:
    proc = subprocess.run([MPREMOTE, "connect", dev.pty, "exec", code], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def configure(dev: VirtualDevice, **door: object) -> None:
    cfg = json.dumps({"door": dict(DOOR, **door)})
    mpremote(dev, f"import os\nwith open('config.json.tmp', 'w') as f: f.write({cfg!r})\n"
                  "os.rename('config.json.tmp', 'config.json')")
    dev.restart()


def journal(dev: VirtualDevice) -> list[tuple[int, int, bytes]]:
    """(code, arg, data) of every event in the device's journal."""
    out = mpremote(dev, "from firmware.main import running\nimport binascii\n"
                        "for r in running['journal'].read(1, 500):\n"
                        "    print(r[1], r[6], binascii.hexlify(bytes(r[7])).decode())")
    rows = []
    for line in out.split("\n"):
        parts = line.split()
        if len(parts) == 3:
            rows.append((int(parts[0]), int(parts[1]), bytes.fromhex(parts[2])))
    return rows


def codes(dev: VirtualDevice) -> list[int]:
    return [r[0] for r in journal(dev)]


def patrol(io: VirtualIO) -> dict[str, Any]:
    return dict(io.status()["patrol"])


def wait_until(cond: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def within(actual_ms: int, expected_ms: int) -> bool:
    return expected_ms - 50 <= actual_ms <= expected_ms + SLACK_MS


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[VirtualDevice]:
    with VirtualDevice(tmp_path / "dev") as d:
        configure(d)
        yield d


def press_rex(io: VirtualIO, relay_when_unlocked: bool = True) -> int:
    """Press REX and hold it until the door has acted on it: a fixed press was missed when
    the door got no CPU for longer than the press (it debounces REX over 30 ms of polls)."""
    t = io.set_input("rex", True)
    io.wait_output("relay", relay_when_unlocked, after_ms=t)  # fail-safe: it drops to unlock
    io.set_input("rex", False)
    return t


def test_rex_exit_unlocks_and_relocks_when_the_door_closes(dev: VirtualDevice) -> None:
    with VirtualIO(dev.io_addr) as io:
        t_rex = press_rex(io)
        on = io.wait_output("relay", True)
        assert 0 <= on.device_ms - t_rex <= SLACK_MS
        t_open = io.set_input("door_contact", "open")
        time.sleep(0.3)
        t_close = io.set_input("door_contact", "closed")
        off = io.wait_output("relay", False)
        # ms ticks: with REX held until the relay acted, the door can open in that same ms
        assert on.device_ms <= t_open < t_close <= off.device_ms <= t_close + SLACK_MS
        assert off.device_ms - on.device_ms < DOOR["unlock_ms"]  # the close, not the window
        assert not io.outputs("buzzer")
    rows = journal(dev)
    assert (ev.ACCESS_GRANTED, 2) in [(r[0], r[1]) for r in rows]
    got = [r[0] for r in rows if r[0] in (ev.ACCESS_GRANTED, ev.DOOR_OPENED, ev.DOOR_CLOSED,
                                          ev.FORCED_OPEN)]
    assert got == [ev.ACCESS_GRANTED, ev.DOOR_OPENED, ev.DOOR_CLOSED]


def test_unused_grant_relocks_at_the_end_of_the_window(dev: VirtualDevice) -> None:
    with VirtualIO(dev.io_addr) as io:
        press_rex(io)
        on = io.wait_output("relay", True)
        off = io.wait_output("relay", False)
        assert within(off.device_ms - on.device_ms, DOOR["unlock_ms"])


def test_forced_door_alarms_at_the_door_and_in_the_journal(dev: VirtualDevice) -> None:
    with VirtualIO(dev.io_addr) as io:
        t_open = io.set_input("door_contact", "open")
        bz = io.wait_output("buzzer", True)
        assert 0 <= bz.device_ms - t_open <= SLACK_MS
        io.wait_output("led", "red")
        wait_until(lambda: patrol(io)["door"] == "forced_open")
        assert "forced_open" in patrol(io)["alarms"]
        t_close = io.set_input("door_contact", "closed")
        quiet = io.wait_output("buzzer", False, after_ms=t_close)
        assert quiet.device_ms - t_close <= SLACK_MS
        assert not io.outputs("relay")
    assert codes(dev).count(ev.FORCED_OPEN) == 1


def test_held_open_prealarm_then_alarm_event_and_cleared(dev: VirtualDevice) -> None:
    with VirtualIO(dev.io_addr) as io:
        press_rex(io)
        io.wait_output("relay", True)
        t_open = io.set_input("door_contact", "open")
        first = io.wait_output("buzzer", True)
        assert within(first.device_ms - t_open, DOOR["prealarm_ms"])
        wait_until(lambda: patrol(io)["door"] == "held_open")
        assert "held_open" in patrol(io)["alarms"]
        # Pre-alarm beeps (on and off); the held-open alarm is a steady tone.
        beeps = [e for e in io.outputs("buzzer") if e.value]
        assert len(beeps) >= 2
        assert beeps[1].device_ms - beeps[0].device_ms >= 300
        assert ev.HELD_OPEN in codes(dev)
        t_close = io.set_input("door_contact", "closed")
        quiet = io.wait_output("buzzer", False, after_ms=t_close)
        assert quiet.device_ms - t_close <= SLACK_MS
        wait_until(lambda: patrol(io)["door"] == "closed")
    got = [c for c in codes(dev) if c in (ev.HELD_OPEN_PREALARM, ev.HELD_OPEN, ev.HELD_OPEN_CLEARED)]
    assert got == [ev.HELD_OPEN_PREALARM, ev.HELD_OPEN, ev.HELD_OPEN_CLEARED]


def test_sensor_cut_is_a_tamper_alarm(dev: VirtualDevice) -> None:
    with VirtualIO(dev.io_addr) as io:
        io.set_input("door_contact", "cut")
        io.wait_output("buzzer", True)
        wait_until(lambda: patrol(io)["door"] == "sensor_cut")
        assert "sensor_tamper" in patrol(io)["alarms"]
        io.set_input("door_contact", "closed")
        wait_until(lambda: patrol(io)["alarms"] == [])
        assert not io.outputs("relay")
    rows = journal(dev)
    assert (ev.SENSOR_TAMPER, 2) in [(r[0], r[1]) for r in rows]
    assert ev.SENSOR_TAMPER_CLEARED in [r[0] for r in rows]
    assert ev.DOOR_OPENED not in [r[0] for r in rows]


def test_passage_mode_keeps_the_door_unlocked_and_still_reports(dev: VirtualDevice) -> None:
    with VirtualIO(dev.io_addr) as io:
        mpremote(dev, "from firmware.main import running\nrunning['door'].set_mode('passage')")
        on = io.wait_output("relay", True)
        io.set_input("door_contact", "open")
        time.sleep(0.3)
        io.set_input("door_contact", "closed")
        time.sleep(DOOR["unlock_ms"] / 1000 + 0.5)
        assert [e.value for e in io.outputs("relay")] == [True]
        assert patrol(io)["mode"] == "passage"
        mpremote(dev, "from firmware.main import running\nrunning['door'].set_mode('normal')")
        off = io.wait_output("relay", False)
        assert off.device_ms > on.device_ms
    c = codes(dev)
    assert ev.DOOR_OPENED in c and ev.DOOR_CLOSED in c and ev.FORCED_OPEN not in c
    assert c.count(ev.MODE_CHANGED) == 2


def test_power_loss_and_restore_with_its_duration(dev: VirtualDevice) -> None:
    with VirtualIO(dev.io_addr) as io:
        io.set_input("power", False)
        wait_until(lambda: "power_lost" in patrol(io)["alarms"])
        time.sleep(2.2)
        io.set_input("power", True)
        wait_until(lambda: patrol(io)["alarms"] == [])
    rows = journal(dev)
    lost = [r for r in rows if r[0] == ev.POWER_LOST]
    restored = [r for r in rows if r[0] == ev.POWER_RESTORED and r[1] == 0]  # mains (1: boot)
    assert len(lost) == 1 and len(restored) == 1
    secs = int.from_bytes(restored[0][2][:4], "little")
    assert 2 <= secs <= 6


def test_fail_safe_lock_is_energised_to_lock(dev: VirtualDevice) -> None:
    configure(dev, fail_safe=True)
    with VirtualIO(dev.io_addr) as io:
        wait_until(lambda: io.state()["outputs"]["relay"] is True)
        press_rex(io, relay_when_unlocked=False)
        off = io.wait_output("relay", False)
        on = io.wait_output("relay", True, after_ms=off.device_ms)
        assert within(on.device_ms - off.device_ms, DOOR["unlock_ms"])


def test_controller_power_cut_while_unlocked_comes_back_locked(dev: VirtualDevice) -> None:
    with VirtualIO(dev.io_addr) as io:
        press_rex(io)
        io.wait_output("relay", True)
    dev.kill()  # the controller itself loses power with the lock released
    dev.restart()
    with VirtualIO(dev.io_addr) as io:
        time.sleep(DOOR["unlock_ms"] / 1000 + 0.5)
        assert io.state()["outputs"]["relay"] is False
        assert not [e for e in io.outputs("relay") if e.value]
        assert patrol(io)["alarms"] == [] and patrol(io)["door"] == "closed"


def test_held_open_reaches_the_platform_as_event_and_patrol_status(tmp_path: Path) -> None:
    from host_tools.services.mosquitto import Mosquitto
    from reference_platform.ingest import Platform
    from reference_platform.store import Store

    device = "demo.b1.door"
    with Mosquitto() as broker, Platform(Store(str(tmp_path / "p.db")), broker.host,
                                         broker.port) as platform, \
            VirtualDevice(tmp_path / "dev") as dev:
        cfg = json.dumps({"device_id": device, "door": DOOR,
                          "broker": {"host": broker.host, "port": broker.port, "keepalive": 10}})
        mpremote(dev, f"import os\nwith open('config.json.tmp', 'w') as f: f.write({cfg!r})\n"
                      "os.rename('config.json.tmp', 'config.json')")
        dev.restart()
        store = platform.store

        def status() -> dict[str, Any]:
            return dict((store.device(device) or {}).get("status") or {})

        wait_until(lambda: status().get("door") == "closed", 30)
        with VirtualIO(dev.io_addr) as io:
            press_rex(io)
            io.wait_output("relay", True)
            io.set_input("door_contact", "open")
            wait_until(lambda: status().get("door") == "held_open", 30)
            assert "held_open" in status()["alarms"]
            wait_until(lambda: ev.HELD_OPEN in [e[1] for e in store.events(device)], 30)
            io.set_input("door_contact", "closed")
            wait_until(lambda: ev.HELD_OPEN_CLEARED in [e[1] for e in store.events(device)], 30)
            wait_until(lambda: status().get("alarms") == [], 30)
