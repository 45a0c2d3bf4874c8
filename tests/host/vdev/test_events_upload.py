"""The virtual device's firmware journals its events and uploads them to the platform."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from reference_platform.ingest import Platform
from reference_platform.store import Store

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))
BOOT, ACCESS_DENIED = 40, 2


def mpremote(dev: VirtualDevice, *args: str) -> str:
    proc = subprocess.run([MPREMOTE, "connect", dev.pty, *args], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def wait_until(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def configure(dev: VirtualDevice, broker: Mosquitto, device_id: str) -> None:
    cfg = json.dumps({"device_id": device_id, "broker": {"host": broker.host, "port": broker.port,
                                                         "keepalive": 10}})
    mpremote(dev, "exec", f"import os\nwith open('config.json.tmp', 'w') as f: f.write({cfg!r})\n"
                          "os.rename('config.json.tmp', 'config.json')")
    dev.restart()


def test_events_reach_the_platform_through_reboots_and_power_cuts(tmp_path: Path) -> None:
    with Mosquitto() as broker, Platform(Store(str(tmp_path / "p.db")), broker.host,
                                         broker.port) as platform, \
            VirtualDevice(tmp_path / "dev") as dev:
        configure(dev, broker, "demo.b1.d1")
        store = platform.store
        wait_until(lambda: any(e[1] == BOOT for e in store.events("demo.b1.d1")))
        wait_until(lambda: (store.device("demo.b1.d1") or {}).get("online") is True)
        mpremote(dev, "exec", "from firmware.main import running\n"
                              "r = running['recorder']\n"
                              "for i in range(20): r.record(2, 1, b'card%02d' % i)")
        wait_until(lambda: store.count("demo.b1.d1") >= 22)
        dev.kill()  # power cut
        wait_until(lambda: (store.device("demo.b1.d1") or {}).get("online") is False, 40)
        dev.restart()
        wait_until(lambda: [e[1] for e in store.events("demo.b1.d1")].count(BOOT) == 3)
        events = store.events("demo.b1.d1")
        assert [e[0] for e in events] == list(range(1, len(events) + 1))
        denied = [e for e in events if e[1] == ACCESS_DENIED]
        assert len(denied) == 20
        assert bytes.fromhex(denied[3][7]) == b"card03"
        assert store.missing("demo.b1.d1") == []
