"""A door whose parts disagree (keys of one site, configuration and whitelist of another:
what a commissioning cut half-way left before it was a transaction) is an alarm at the door
(its status report), in the self-test, and at the platform (its alarm list)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from host_tools.cards.kit import SiteKit
from host_tools.commands.commission import build_config, door_files
from host_tools.commands.platform.cards import alarm_rows
from host_tools.console import mpremote
from host_tools.door_stage import Transaction
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from offline_cache import fmt
from reference_platform.ingest import Platform
from reference_platform.store import Store

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
DEVICE = "mix.b1.d1"


def test_keys_of_another_site_are_an_alarm_everywhere(tmp_path: Path) -> None:
    door_site, other = SiteKit(2025), SiteKit(2024)
    broker = Mosquitto().start()
    store = Store(str(tmp_path / "p.db"))
    platform = Platform(store, broker.host, broker.port).start()
    dev = VirtualDevice(tmp_path / "door").start()
    try:
        cfg = build_config(DEVICE, door_site.site_id, 1, f"{broker.host}:{broker.port}", None,
                           None, False, None, None, False,
                           {"unlock_ms": 5000, "held_open_ms": 30000}, False, False)
        snap = door_site.snapshot(1, [(b"\x00" * 7 + b"\x01", fmt.ACTIVE, False)])
        files, remove = door_files(door_site.keys, cfg, {}, snap)
        files["keys.json"] = door_files(other.keys, cfg, {}, None)[0]["keys.json"]  # the mix
        Transaction(dev.pty, files, remove).run()
        dev.restart()
        # the self-test names it
        r = subprocess.run([DOORCTL, "selftest", "-p", dev.pty, "--relay", "skip",
                            "--report-dir", str(tmp_path), "--json"],
                           capture_output=True, text=True, timeout=120)
        items = {i["item"]: i for i in json.loads(r.stdout)["items"]}
        assert r.returncode == 1
        assert items["door setup"]["result"] == "fail", items["door setup"]
        assert "site 2024" in items["door setup"]["detail"]
        assert "site 2025" in items["door setup"]["detail"]
        # the platform lists it as an active alarm, and the door's status report carries it
        deadline = time.monotonic() + 30
        while True:
            rows = [a for a in alarm_rows(store, DEVICE) if a["alarm"] == "setup_fault"]
            status = (store.device(DEVICE) or {}).get("status") or {}
            if rows and "setup" in status:
                break
            assert time.monotonic() < deadline, (rows, status)
            time.sleep(0.2)
        assert rows[-1]["end"] is None
        assert "keys_site" in status["setup"]
        # commissioned right, the door boots without the fault and the alarm ends
        files["keys.json"] = door_files(door_site.keys, cfg, {}, None)[0]["keys.json"]
        Transaction(dev.pty, files, remove).run()
        dev.restart()
        out = mpremote(dev.pty, "exec", "from firmware.main import running\n"
                                        "print(running['setup'])")
        assert out.strip() == "[]"
        deadline = time.monotonic() + 30
        while [a for a in alarm_rows(store, DEVICE) if a["alarm"] == "setup_fault"][-1]["end"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        dev.stop()
        platform.stop()
        broker.stop()


def test_a_clock_the_door_cannot_trust_is_an_alarm_until_the_platform_sets_it(tmp_path: Path) -> None:
    # A platform without the site's keys sends an unsigned time: the door shows it, but runs
    # its offline policy (cards refused with clock_unset). The platform lists that as an
    # alarm; a signed time ends it in the report that follows at once, not a patrol later.
    from host_tools.vdev.provision import provision
    from reference_platform.commands import command_key

    site = SiteKit(2025)
    broker = Mosquitto().start()
    store = Store(str(tmp_path / "p.db"))
    platform = Platform(store, broker.host, broker.port).start()  # no ack key: unsigned time
    dev = VirtualDevice(tmp_path / "door").start()
    try:
        provision(dev.pty, config=site.door_config(
            DEVICE, broker={"host": broker.host, "port": broker.port}), keys=site.door_keys())
        dev.restart()

        def clock_alarm() -> list[dict[str, object]]:
            return [a for a in alarm_rows(store, DEVICE) if a["alarm"] == "clock_unset"]

        deadline = time.monotonic() + 30
        while True:  # the unsigned time arrived: the clock shows a time, still not trusted
            status = (store.device(DEVICE) or {}).get("status") or {}
            if status.get("clock_synced") and clock_alarm():
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert status["clock_trusted"] is False and "clock_unset" in status["setup"]
        assert clock_alarm()[0]["end"] is None
        r = subprocess.run([DOORCTL, "platform", "doors", "--db", str(tmp_path / "p.db"), "--json"],
                           capture_output=True, text=True, timeout=60)
        assert json.loads(r.stdout)[0]["alarms"] == ["clock_unset"], r.stdout
        # the platform gets the site's keys: the door's next connection gets a signed time
        platform.ack_key = command_key(site.keys)
        dev.restart()
        deadline = time.monotonic() + 30  # far below the 300 s patrol interval
        while clock_alarm():
            assert time.monotonic() < deadline, (store.device(DEVICE) or {}).get("status")
            time.sleep(0.2)
        assert ((store.device(DEVICE) or {}).get("status") or {})["clock_trusted"] is True
    finally:
        dev.stop()
        platform.stop()
        broker.stop()
