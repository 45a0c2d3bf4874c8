"""Broker mistakes an installer makes, against real mosquitto brokers (plain and TLS-only):
each is one line and a non-zero exit code, quickly. Also: a door id the broker never heard
of, a closed pipe after `monitor --json`, and a door that refuses an update making
`platform card ...` / `platform sync` fail."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from host_tools.cards import sitekeys
from host_tools.cli_inputs import parse_broker
from host_tools.services.mosquitto import Mosquitto, TLSListener
from host_tools.services.tlsgen import CA
from reference_platform.store import Store
from wire import common
from wire.door import encode_cache_state, encode_presence, encode_status

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
DOOR = "cli.b1.d1"


def doorctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOORCTL, *args], capture_output=True, text=True, timeout=timeout)


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def plain() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mosquitto, CA]]:
    ca = CA(tmp_path_factory.mktemp("pki"))
    server = ca.server()
    with Mosquitto(tls=TLSListener(ca.cert, server.cert, server.key)) as b:
        yield b, ca


def test_broker_urls_are_parsed() -> None:
    def parts(text: str) -> tuple[str, int, bool | None]:
        b = parse_broker(text)
        return b.host, b.port, b.tls

    assert parts("mqtt://10.0.0.5:1884") == ("10.0.0.5", 1884, False)  # not host "mqtt://10.0.0.5"
    assert parts("mqtts://broker.example") == ("broker.example", 8883, True)
    assert parts("[::1]:1883") == ("::1", 1883, None)


def test_monitor_on_a_tls_port_without_a_ca_says_so(tls: tuple[Mosquitto, CA]) -> None:
    b, _ = tls
    r = doorctl("monitor", "--door", DOOR, "--broker", f"{b.host}:{b.port}", "--seconds", "2")
    assert r.returncode == 4 and "TLS" in one_line(r) and "--tls-ca" in r.stderr


def test_platform_run_on_a_tls_port_without_tls_is_named_quickly(tls: tuple[Mosquitto, CA],
                                                                  tmp_path: Path) -> None:
    b, _ = tls
    t0 = time.monotonic()
    r = doorctl("platform", "run", "--broker", f"mqtt://{b.host}:{b.port}", "--db", str(tmp_path / "p.db"))
    assert r.returncode == 4 and "--tls-ca" in one_line(r)
    assert time.monotonic() - t0 < 15  # not the 20 s wait for a connection that never comes


def test_mqtts_without_a_ca_is_a_wrong_value(tls: tuple[Mosquitto, CA], tmp_path: Path) -> None:
    b, _ = tls
    r = doorctl("platform", "run", "--broker", f"mqtts://{b.host}:{b.port}", "--db", str(tmp_path / "p.db"))
    assert r.returncode == 2 and "--tls-ca" in one_line(r)


def test_monitor_with_tls_options_on_the_tls_port_watches(tls: tuple[Mosquitto, CA]) -> None:
    b, ca = tls
    _retain(b, DOOR, "presence", encode_presence(True, 1, "0.1.0"), tls_ca=str(ca.cert))
    r = doorctl("monitor", "--door", DOOR, "--broker", f"mqtts://{b.host}:{b.port}", "--tls-ca",
                str(ca.cert), "--seconds", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0]) == {"kind": "presence", "online": True, "fw": "0.1.0"}


def test_monitor_refuses_a_door_the_broker_never_heard_of(plain: Mosquitto) -> None:
    r = doorctl("monitor", "--door", "no.such.door", "--broker", f"{plain.host}:{plain.port}")
    assert r.returncode == 2 and "--door no.such.door" in one_line(r) and "--wait" in r.stderr
    r = doorctl("monitor", "--door", "no.such.door", "--broker", f"{plain.host}:{plain.port}", "--wait",
                "--seconds", "4")
    assert r.returncode == 0 and r.stderr == ""


def test_monitor_into_a_closed_pipe_ends_cleanly(plain: Mosquitto) -> None:
    for i in range(3):
        _retain(plain, f"{DOOR}{i}", "presence", encode_presence(True, 1, "0.1.0"))
    status = {"door": "closed", "mode": "normal", "lock": "locked", "alarms": [], "journal_depth": 0,
              "cache_version": 1, "seq": 3}
    _retain(plain, DOOR + "0", "status", encode_status(status))
    mon = subprocess.Popen([DOORCTL, "monitor", "--door", DOOR + "0", "--broker",
                            f"{plain.host}:{plain.port}", "--json"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    assert mon.stdout is not None and mon.stderr is not None
    mon.stdout.readline()
    mon.stdout.close()  # `| head -1` has read its line and gone
    client = _client(plain)
    for n in range(20):
        client.publish(common.topic(DOOR + "0", "status"), encode_status(dict(status, seq=n)),
                       qos=1).wait_for_publish(5)
    client.disconnect()
    assert mon.wait(20) == 0
    assert mon.stderr.read() == b""


def test_status_lines_name_no_absent_reader(plain: Mosquitto) -> None:
    status = {"door": "closed", "mode": "normal", "lock": "locked", "alarms": [], "journal_depth": 0,
              "cache_version": 1, "seq": 3}
    _retain(plain, DOOR + "r", "status", encode_status(status))
    r = doorctl("monitor", "--door", DOOR + "r", "--broker", f"{plain.host}:{plain.port}", "--seconds", "2")
    assert r.returncode == 0 and "whitelist v1" in r.stdout and "reader None" not in r.stdout


def test_a_door_refusing_the_update_fails_the_command(plain: Mosquitto, tmp_path: Path) -> None:
    keys = tmp_path / "site.json"
    sitekeys.write_secret(keys, sitekeys.new_site_keys(1001))
    db = str(tmp_path / "p.db")
    Store(db).close()
    door = _RefusingDoor(plain, DOOR + "x")
    try:
        r = doorctl("platform", "card", "issue", "5101013aeef2e95e", "--resident", "r-1", "--room", "1",
                    "--doors", "0", "--from", "2026-01-01", "--to", "2026-12-31", "--keys", str(keys),
                    "--db", db, "--broker", f"{plain.host}:{plain.port}", "--json")
        assert r.returncode == 1, r.stdout + r.stderr
        out = json.loads(r.stdout)
        assert out["failed"] is True and out["doors"][DOOR + "x"] == "failed: bad_tag"
        assert "did not take the update" in one_line(r)
        r = doorctl("platform", "sync", "--keys", str(keys), "--db", db, "--broker",
                    f"{plain.host}:{plain.port}")
        assert r.returncode == 1 and "failed: bad_tag" in r.stdout
    finally:
        door.stop()


# -- helpers: a broker client, retained messages, a door that refuses every whitelist file --

def _client(b: Mosquitto, tls_ca: str | None = None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    if tls_ca:
        c.tls_set(ca_certs=tls_ca)
    c.connect(b.host, b.port)
    c.loop_start()
    return c


def _retain(b: Mosquitto, door: str, leaf: str, payload: bytes, tls_ca: str | None = None) -> None:
    c = _client(b, tls_ca)
    c.publish(common.topic(door, leaf), payload, qos=1, retain=True).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


class _RefusingDoor:
    """Publishes a retained whitelist state (version 0) and answers every file with bad_tag,
    as a door does whose key does not match the platform's."""

    def __init__(self, b: Mosquitto, door: str) -> None:
        self.door = door
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.ready = threading.Event()

        def on_connect(c: mqtt.Client, *_: object) -> None:
            c.subscribe(common.topic(door, "cache"), 1)
            self.ready.set()

        def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            c.publish(common.topic(door, "cache_state"),
                      encode_cache_state(0, reason="bad_tag"), qos=1, retain=True)

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.connect(b.host, b.port)
        self.client.loop_start()
        assert self.ready.wait(10)
        self.client.publish(common.topic(door, "cache_state"), encode_cache_state(0), qos=1,
                            retain=True).wait_for_publish(5)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
