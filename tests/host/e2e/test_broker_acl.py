"""The shipped mosquitto access control, against a real mosquitto: each door publishes and
reads only its own topics, only the platform publishes `ack`, `cmd`, `time`, `cache` and
`resend`, observers only read; and a door and the platform still work through it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from host_tools.services.mosquitto import BrokerAuth, Mosquitto
from reference_platform import broker_acl
from reference_platform.ingest import Platform
from reference_platform.store import Store
from tests.host.e2e.test_journal_overflow import Door
from wire import common

D1, D2 = "site.b1.d1", "site.b1.d2"
PASSWORDS = {D1: "pw-door-1", D2: "pw-door-2", "@platform": "pw-platform", "%monitor": "pw-monitor"}


@pytest.fixture(scope="module")
def broker() -> Iterator[Mosquitto]:
    with Mosquitto(auth=BrokerAuth(dict(PASSWORDS))) as b:
        yield b


class Client:
    """A paho client logged in as `user`; records what it receives."""

    def __init__(self, b: Mosquitto, user: str | None, password: str | None = None) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.refused: int | None = None
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{time.monotonic_ns()}")
        if user is not None:
            self.c.username_pw_set(user, password if password is not None else PASSWORDS[user])
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.got.append((m.topic, m.payload))
        self.c.on_subscribe = lambda *a: self._subscribed.set()
        self.c.connect(b.host, b.port)
        self.c.loop_start()
        self._connected.wait(10)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    props: object = None) -> None:
        self.refused = int(reason.value) if reason.is_failure else 0  # type: ignore[attr-defined]
        self._connected.set()

    def subscribe(self, topic: str) -> Client:
        self._subscribed.clear()
        self.c.subscribe(topic, 1)
        assert self._subscribed.wait(10)
        return self

    def publish(self, topic: str, payload: bytes = b'{"v": 1}') -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def clients(broker: Mosquitto) -> Iterator[dict[str, Client]]:
    cs = {u: Client(broker, u) for u in PASSWORDS}
    yield cs
    for c in cs.values():
        c.stop()


def settle(*expected: tuple[Client, int]) -> None:
    """Until each client has received at least as many messages as it should (a busy machine
    can hold a receiving thread up), then 0.7 s more, in which what the broker wrongly
    let through would arrive too: what is refused never does."""
    deadline = time.monotonic() + 10
    for client, n in expected:
        while len(client.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
    time.sleep(0.7)


def t(device: str, leaf: str) -> str:
    return common.topic(device, leaf)


def test_no_login_no_wrong_password(broker: Mosquitto) -> None:
    anon = Client(broker, None)
    wrong = Client(broker, D1, "not-the-password")
    try:
        assert anon.refused not in (None, 0)
        assert wrong.refused not in (None, 0)
    finally:
        anon.stop()
        wrong.stop()


def test_a_door_publishes_only_its_own_device_topics(clients: dict[str, Client]) -> None:
    platform = clients["@platform"].subscribe(common.ROOT + "#")
    d2 = clients[D2]
    for leaf in broker_acl.DOOR_PUBLISHES:
        d2.publish(t(D2, leaf))  # its own: delivered
        d2.publish(t(D1, leaf))  # another door's: dropped
    settle((platform, len(broker_acl.DOOR_PUBLISHES)))
    topics = {topic for topic, _ in platform.got}
    assert topics == {t(D2, leaf) for leaf in broker_acl.DOOR_PUBLISHES}


def test_only_the_platform_publishes_to_a_door(clients: dict[str, Client]) -> None:
    d1 = clients[D1].subscribe(common.ROOT + D1 + "/#")
    for leaf in broker_acl.DOOR_READS:
        for sender in (D1, D2, "%monitor"):  # the door itself, another door, an observer
            clients[sender].publish(t(D1, leaf), b"forged by " + sender.encode())
        clients["@platform"].publish(t(D1, leaf), b"from the platform")
    settle((d1, len(broker_acl.DOOR_READS)))
    assert sorted(d1.got) == sorted((t(D1, leaf), b"from the platform") for leaf in broker_acl.DOOR_READS)


def test_a_door_reads_nothing_of_another_door(clients: dict[str, Client]) -> None:
    d2 = clients[D2].subscribe(common.ROOT + "#").subscribe(t(D1, "cmd"))
    for leaf in broker_acl.DOOR_READS:
        clients["@platform"].publish(t(D1, leaf))
    clients[D1].publish(t(D1, "events"))
    clients["@platform"].publish(t(D2, "cmd"))
    settle((d2, 1))
    assert [topic for topic, _ in d2.got] == [t(D2, "cmd")]


def test_an_observer_reads_everything(clients: dict[str, Client]) -> None:
    mon = clients["%monitor"].subscribe(common.ROOT + "#")
    clients[D1].publish(t(D1, "events"))
    clients["@platform"].publish(t(D2, "cmd"))
    settle((mon, 2))
    assert sorted(topic for topic, _ in mon.got) == [t(D1, "events"), t(D2, "cmd")]


def test_a_door_delivers_through_the_acl_broker(tmp_path: Path, broker: Mosquitto) -> None:
    with Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port, username="@platform",
                  password=PASSWORDS["@platform"]) as platform:
        assert platform.connected.wait(10)
        Door(tmp_path / "flash.img", broker, 300, 1, 0, f"user={D1}",
             f"password={PASSWORDS[D1]}").finish()
        assert [e[0] for e in platform.store.events(D1)] == list(range(1, 301))
        assert platform.store.device(D1)["boot"] == 1  # type: ignore[index]


def test_user_names_the_acl_refuses(tmp_path: Path) -> None:
    for bad in ("platform", "@", "@a b", "@a/b", "@a:b"):
        with pytest.raises(ValueError):
            broker_acl.acl_text([bad])
    assert "user @p-1\ntopic readwrite door/v1/#" in broker_acl.acl_text(["@p-1"])


DOORCTL = str(Path(sys.executable).with_name("doorctl"))


class ConfiguredMosquitto(Mosquitto):
    """mosquitto with the access control files `doorctl platform broker-acl`/`broker-user` wrote."""

    def __init__(self, access_conf: Path) -> None:
        super().__init__()
        self.access_conf = access_conf

    def config(self) -> str:
        lines = []
        for line in self.access_conf.read_text().splitlines():
            key, _, path = line.partition(" ")
            if key in ("password_file", "acl_file"):
                copy = self._dir / Path(path).name
                shutil.copyfile(path, copy)
                line = f"{key} {self._own(copy)}"
            lines.append(line)
        return f"listener {self.port} 127.0.0.1\npersistence false\n" + "\n".join(lines) + "\n"


def test_the_files_doorctl_writes_work_in_mosquitto(tmp_path: Path) -> None:
    pw = tmp_path / "door.pw"
    pw.write_text("door-secret\n")
    plat = tmp_path / "platform.pw"
    plat.write_text("platform-secret\n")
    out = tmp_path / "mosq"
    passwd = out / "passwd"
    for args in (["broker-acl", "--out", str(out), "--platform", "@ingest", "--passwd", str(passwd)],
                 ["broker-user", str(passwd), D1, "--password-file", str(pw)],
                 ["broker-user", str(passwd), "@ingest", "--password-file", str(plat)]):
        proc = subprocess.run([DOORCTL, "platform", *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    assert "secret" not in passwd.read_text()
    bad = subprocess.run([DOORCTL, "platform", "broker-acl", "--out", str(out), "--platform", "ingest"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "must start with '@'" in bad.stderr
    with ConfiguredMosquitto(out / "access.conf") as b:
        door = Client(b, D1, "door-secret")
        platform = Client(b, "@ingest", "platform-secret")
        wrong = Client(b, D1, "door-secret!")
        try:
            assert door.refused == 0 and platform.refused == 0 and wrong.refused != 0
            platform.subscribe(common.ROOT + "#")
            door.subscribe(t(D1, "ack"))
            door.publish(t(D1, "events"))
            door.publish(t(D2, "events"))
            door.publish(t(D1, "ack"))
            platform.publish(t(D1, "ack"), b"ok")
            settle((platform, 2), (door, 1))  # the events, and the platform's own ack
            assert [x for x, _ in platform.got if x.endswith("/events")] == [t(D1, "events")]
            assert door.got == [(t(D1, "ack"), b"ok")]
        finally:
            for c in (door, platform, wrong):
                c.stop()


def test_the_doorctl_tools_log_in_from_the_environment(tmp_path: Path, broker: Mosquitto) -> None:
    """`platform run` as a platform user, `monitor` as an observer: DOORCTL_BROKER_USER and
    DOORCTL_BROKER_PASSWORD_FILE (the password from a file, never on a command line)."""
    import json
    import os
    import signal

    def env(user: str) -> dict[str, str]:
        pw = tmp_path / f"{user}.pw"
        pw.write_text(PASSWORDS[user] + "\n")
        return {**os.environ, broker_acl.USER_ENV: user, broker_acl.PASSWORD_FILE_ENV: str(pw)}

    db = tmp_path / "p.db"
    run = subprocess.Popen([DOORCTL, "platform", "run", "--broker", f"{broker.host}:{broker.port}",
                            "--db", str(db)], env=env("@platform"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None and "platform ingesting" in run.stdout.readline()
        Door(tmp_path / "flash.img", broker, 50, 1, 0, f"user={D1}",
             f"password={PASSWORDS[D1]}").finish()
        mon = subprocess.run([DOORCTL, "monitor", "--broker", f"{broker.host}:{broker.port}",
                              "--door", D1, "--seconds", "2", "--json"], env=env("%monitor"),
                             capture_output=True, text=True, timeout=60)
        assert mon.returncode == 0, mon.stderr
        assert any(json.loads(x).get("kind") == "presence" for x in mon.stdout.splitlines())
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(10)
    assert [e[0] for e in Store(str(db)).events(D1)] == list(range(1, 51))
    missing = subprocess.run([DOORCTL, "monitor", "--broker", f"{broker.host}:{broker.port}",
                              "--door", D1, "--seconds", "1"],
                             env={**os.environ, broker_acl.USER_ENV: "%monitor"},
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and broker_acl.PASSWORD_FILE_ENV in missing.stderr
