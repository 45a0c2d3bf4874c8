"""`doorctl platform run` and `events` as processes, against a real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.publish as publish

from host_tools.services.mosquitto import Mosquitto, free_port
from wire import common
from wire.door import encode_events

DOORCTL = str(Path(sys.executable).with_name("doorctl"))


def test_platform_run_stores_and_events_lists(tmp_path: Path) -> None:
    db = str(tmp_path / "p.db")
    with Mosquitto() as b:
        proc = subprocess.Popen([DOORCTL, "platform", "run", "--broker", f"{b.host}:{b.port}",
                                 "--db", db], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout is not None
            assert "platform ingesting" in proc.stdout.readline()
            batch = [(1, 40, 1, 5, 0, 0, 1, ""), (2, 2, 1, 6, 0, 0, 3, "aabb")]
            publish.single(common.topic("x.y.z", "events"), encode_events(1, batch),
                           qos=1, hostname=b.host, port=b.port)
            publish.single(common.topic("x.y.z", "events"), b"garbage", qos=1,
                           hostname=b.host, port=b.port)
            deadline = time.monotonic() + 20
            listed: dict[str, object] = {}
            while time.monotonic() < deadline:
                out = subprocess.run([DOORCTL, "platform", "events", "x.y.z", "--db", db, "--json"],
                                     capture_output=True, text=True)
                if out.returncode != 0:  # the device is not known yet: nothing stored so far
                    time.sleep(0.1)
                    continue
                listed = json.loads(out.stdout)
                if listed["ack_upto"] == 2:
                    break
                time.sleep(0.1)
            assert [e["seq"] for e in listed["events"]] == [1, 2]  # type: ignore[index]
            assert listed["missing"] == []
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        assert proc.returncode == 0


def test_platform_run_without_broker_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run([DOORCTL, "platform", "run", "--broker", f"127.0.0.1:{free_port()}",
                           "--db", str(tmp_path / "p.db"), "--broker-wait", "4"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4
    assert "cannot reach the MQTT broker" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_platform_run_waits_for_a_broker_that_comes_later(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([DOORCTL, "platform", "run", "--broker", f"127.0.0.1:{port}",
                             "--db", str(tmp_path / "p.db")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        while True:  # it says what it waits for, and does not exit
            line = proc.stderr.readline()
            assert line, "exited: " + proc.stderr.read()
            if "waiting for the MQTT broker" in line:
                break
        assert f"127.0.0.1:{port} (connection refused)" in line
        with Mosquitto(port=port):
            assert "platform ingesting" in proc.stdout.readline()
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def test_bad_broker_value_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([DOORCTL, "platform", "run", "--broker", "nohost"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2
    assert "HOST:PORT" in proc.stderr


def test_platform_run_waits_for_a_hung_broker_to_answer(tmp_path: Path) -> None:
    """A broker that accepts TCP but answers nothing (stopped, overloaded) is waited for like
    an absent one, not taken for a wrong port: the platform came up once it answered."""
    with Mosquitto() as b:
        b.pause(True)
        proc = subprocess.Popen([DOORCTL, "platform", "run", "--broker", f"{b.host}:{b.port}",
                                 "--db", str(tmp_path / "p.db")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None and proc.stdout is not None
            line = proc.stderr.readline()  # after its first 3 s probe
            assert "waiting for the MQTT broker" in line and "no MQTT answer" in line, \
                line + proc.stderr.read()
            b.pause(False)
            assert "platform ingesting" in proc.stdout.readline()
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        finally:
            b.pause(False)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
