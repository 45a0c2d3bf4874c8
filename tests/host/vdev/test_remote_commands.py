"""Signed remote commands from the reference platform to a virtual door through mosquitto:
remote open, lockdown, patrol and config are carried out once; replays, forgeries and
commands captured before a reboot are refused, replied to with the reason and journaled."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host_tools.cards.kit import SiteKit
from host_tools.console import mpremote
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import provision
from reference_platform.commands import command_key, sign
from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire import codes as ev
from wire import common
from wire.door import encode_presence
from wire.platform import encode_time

DEVICE = "cmd.b1.d1"


def wait_until(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class Door:
    def __init__(self, tmp: Path) -> None:
        self.site = SiteKit()
        self.key = command_key(self.site.keys)
        self.broker = Mosquitto().start()
        self.platform = Platform(Store(str(tmp / "p.db")), self.broker.host, self.broker.port,
                                 ack_key=self.key).start()
        self.dev = VirtualDevice(tmp / "door").start()
        provision(self.dev.pty, config=self.site.door_config(
            DEVICE, broker={"host": self.broker.host, "port": self.broker.port},
            door={"unlock_ms": 1000}), keys=self.site.door_keys())
        self.restart()

    def restart(self) -> None:
        self.dev.restart()
        wait_until(lambda: (self.platform.store.device(DEVICE) or {}).get("online") is True)
        with VirtualIO(self.dev.io_addr) as io:
            wait_until(lambda: bool(io.status().get("clock_synced")))

    def send(self, payload: bytes, cmd_id: str) -> dict[str, Any]:
        self.platform.publish(DEVICE, "cmd", payload)
        reply = self.platform.wait_reply(cmd_id, 10)
        assert reply is not None, "no reply"
        self.platform.replies.pop(cmd_id)
        return reply

    def codes(self, code: int) -> list[int]:
        return [e[6] for e in self.platform.store.events(DEVICE) if e[1] == code]

    def close(self) -> None:
        self.dev.stop()
        self.platform.stop()
        self.broker.stop()


@pytest.fixture()
def door(tmp_path: Path) -> Iterator[Door]:
    d = Door(tmp_path)
    yield d
    d.close()


def test_remote_open_runs_once_and_a_replay_or_forgery_is_refused(door: Door) -> None:
    with VirtualIO(door.dev.io_addr) as io:
        t = io.set_input("rex", False)
        cmd_id, payload = sign(door.key, DEVICE, "open")
        assert door.send(payload, cmd_id) == {"device": DEVICE, "v": 1, "id": cmd_id, "ok": True}
        io.wait_output("relay", True, timeout_s=5, after_ms=t)
        io.wait_output("relay", False, timeout_s=5, after_ms=t)  # the unlock window ends
        t2 = io.set_input("rex", False)
        assert door.send(payload, cmd_id)["reason"] == "replay"
        forged_id, forged = sign(b"\x00" * 32, DEVICE, "open")
        assert door.send(forged, forged_id)["reason"] == "bad_mac"
        other_id, other = sign(door.key, "other.b1.d9", "open")  # signed for another door
        door.platform.publish(DEVICE, "cmd", other)
        assert door.platform.wait_reply(other_id, 10)["reason"] == "bad_mac"  # type: ignore[index]
        time.sleep(0.3)
        assert not [e for e in io.outputs("relay") if e.device_ms >= t2 and e.value]
    # The replay is journaled; the two forgeries are counted in the door's status only (anyone
    # on the broker can send them: they must not fill the journal).
    wait_until(lambda: len(door.codes(ev.COMMAND_REJECTED)) == 1)
    with VirtualIO(door.dev.io_addr) as io:
        assert io.status()["refused"] == {"bad_mac": 2}
    assert door.codes(ev.ACCESS_GRANTED) == [3]  # one remote opening


def test_lockdown_patrol_and_config_by_command(door: Door) -> None:
    cmd_id, payload = sign(door.key, DEVICE, "mode", {"mode": "lockdown"})
    assert door.send(payload, cmd_id)["ok"] is True
    cmd_id, payload = sign(door.key, DEVICE, "patrol")  # unsigned: asking changes nothing
    assert door.send(payload, cmd_id)["ok"] is True
    wait_until(lambda: ((door.platform.store.device(DEVICE) or {}).get("status") or {}).get("mode")
               == "lockdown")
    cmd_id, payload = sign(door.key, DEVICE, "config", {"held_open_ms": 5})
    assert door.send(payload, cmd_id)["reason"] == "out_of_range:held_open_ms"
    cmd_id, payload = sign(door.key, DEVICE, "config", {"unlock_ms": 2500, "patrol_interval_s": 60})
    assert door.send(payload, cmd_id)["ok"] is True
    cfg = json.loads(mpremote(door.dev.pty, "exec", "print(open('config.json').read())").strip())
    assert cfg["door"]["unlock_ms"] == 2500 and cfg["patrol_interval_s"] == 60
    assert cfg["device_id"] == DEVICE  # the rest of the configuration kept
    wait_until(lambda: ev.CONFIG_CHANGED in [e[1] for e in door.platform.store.events(DEVICE)])


def test_a_command_captured_before_a_reboot_is_stale_after_it(door: Door) -> None:
    cmd_id, payload = sign(door.key, DEVICE, "open")
    # signed before the reboot, beyond the 2 s clock skew allowed (whole seconds), still unexpired
    time.sleep(3.5)
    door.restart()
    assert door.send(payload, cmd_id)["reason"] == "stale"


def _retain(door: Door, device: str, payload: bytes) -> None:
    """Leave a retained presence message for `device` on the door's broker."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(door.broker.host, door.broker.port)
    client.loop_start()
    try:
        client.publish(common.topic(device, "presence"), payload, qos=1,
                       retain=True).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def test_doorctl_platform_command(door: Door, tmp_path: Path) -> None:
    import subprocess
    import sys

    doorctl = str(Path(sys.executable).with_name("doorctl"))
    keys = tmp_path / "site.json"
    keys.write_text(json.dumps(door.site.keys))
    broker = f"{door.broker.host}:{door.broker.port}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([doorctl, "platform", "command", *args, "--keys", str(keys),
                               "--broker", broker], capture_output=True, text=True, timeout=60)

    ok = run(DEVICE, "mode", "--arg", "mode=passage")
    assert ok.returncode == 0 and ok.stdout.strip() == f"{DEVICE}: mode done"
    bad = run(DEVICE, "config", "--arg", "unlock_ms=1", "--json")
    assert bad.returncode == 1 and json.loads(bad.stdout)["reason"] == "out_of_range:unlock_ms"
    assert run(DEVICE, "explode").returncode == 2
    # an id no door ever announced on the broker: one line at once, not the command's timeout
    started = time.monotonic()
    typo = run("nobody.b1.d1", "patrol", "--timeout", "30")
    assert typo.returncode == 2 and "unknown on the broker" in typo.stderr, typo.stderr
    assert len(typo.stderr.strip().splitlines()) == 1 and time.monotonic() - started < 25
    # a door that announced itself (its retained presence) but does not answer: the timeout
    _retain(door, "quiet.b1.d1", encode_presence(False))
    # 3 s: the timeout also bounds the wait for the broker's SUBACK, which a loaded machine
    # can take over 1 s to give (exit 4 as well, with another message)
    silent = run("quiet.b1.d1", "patrol", "--timeout", "3")
    assert silent.returncode == 4 and "no reply" in silent.stderr
    down = subprocess.run([doorctl, "platform", "command", DEVICE, "open", "--keys", str(keys),
                           "--broker", "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 4 and "cannot reach" in down.stderr


def test_an_unsigned_time_message_cannot_move_a_set_clock(door: Door) -> None:
    # Anyone who can publish on the broker can send a time message: once the clock is set
    # (here by the platform's signed time) an unsigned one changes nothing.

    now_ms = int(time.time() * 1000)
    with VirtualIO(door.dev.io_addr) as io:
        assert io.status().get("clock_trusted") is True
        refused = io.status().get("time_refused", 0)
        for back_s in (86400, 250, -500, 3):
            door.platform.publish(DEVICE, "time", encode_time(now_ms - back_s * 1000))
        wait_until(lambda: io.status().get("time_refused", 0) == refused + 4)
        assert io.status().get("clock_trusted") is True
    cmd_id, payload = sign(door.key, DEVICE, "open")
    assert door.send(payload, cmd_id)["ok"] is True  # the clock is where it was
