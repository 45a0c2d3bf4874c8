"""A fan-out published on a connection of its own, written in bulk
(reference_platform/fanout_writer.py): through a real mosquitto every door that holds the card
gets the new whitelist, each piece once and in order; a connection the broker refuses or drops
leaves what it did not acknowledge to paho's connection, so nothing is lost."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from host_tools.cards.kit import SiteKit
from host_tools.doorsim import SimDoor
from host_tools.services.mosquitto import Mosquitto
from reference_platform import fanout_writer, mqtt_frames
from reference_platform.cards import CardRegistry
from reference_platform.distribute import attach, sync
from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire import common
from wire.door import encode_cache_state


class Listener:
    """Every message on a topic filter, per topic, in arrival order."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.got: dict[str, list[bytes]] = defaultdict(list)
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="platform-listener")
        subscribed = threading.Event()
        self.client.on_message = self._message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got[msg.topic].append(bytes(msg.payload))

    def count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.got.values())

    def until(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_every_message_reaches_the_broker_once_and_in_order_past_the_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout_writer, "WINDOW", 7)  # many refills of a small window
    with Mosquitto() as broker:
        listener = Listener(broker, "t/#")
        try:
            messages = [(f"t/{i % 40}", f"{i}".encode() * (1 + i % 50)) for i in range(2000)]
            assert fanout_writer.publish_all(broker.host, broker.port, messages) == []
            listener.until(len(messages))
            time.sleep(0.3)  # a duplicate would come now
            expected: dict[str, list[bytes]] = defaultdict(list)
            for topic, payload in messages:
                expected[topic].append(payload)
            assert dict(listener.got) == dict(expected)
        finally:
            listener.close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_a_broker_that_cannot_be_reached_leaves_every_message_to_the_caller() -> None:
    messages = [("t/a", b"1"), ("t/b", b"2")]
    assert fanout_writer.publish_all("127.0.0.1", _closed_port(), messages, timeout=3) == [0, 1]


def test_a_connection_dropped_midway_hands_back_exactly_what_was_not_acknowledged() -> None:
    """A broker that acknowledges some packets (not in order) and then closes: the writer
    returns the others, in order, so the caller sends them again and none is skipped."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    acked_ids = [2, 1, 4]  # packet ids 1.. are messages 0..

    def broker() -> None:
        conn, _ = server.accept()
        with conn:
            reader = mqtt_frames.Packets()
            publishes = 0
            while publishes < 6:
                data = conn.recv(4096)
                if not data:
                    return
                for head, _body in reader.feed(data):
                    ptype = head >> 4
                    if ptype == fanout_writer.CONNECT:
                        conn.sendall(b"\x20\x02\x00\x00")
                    elif ptype == fanout_writer.PUBLISH:
                        publishes += 1
            conn.sendall(b"".join(bytes([0x40, 2, 0, i]) for i in acked_ids))
            time.sleep(0.2)

    t = threading.Thread(target=broker)
    t.start()
    try:
        messages = [(f"t/{i}", b"x") for i in range(6)]
        assert fanout_writer.publish_all("127.0.0.1", port, messages, timeout=10) == [2, 4, 5]
    finally:
        t.join(10)
        server.close()


class PlatformOnly(Mosquitto):
    """A broker that takes only client ids starting `platform-` (the platform's, the test's
    listener): the fan-out's own connection (`fanout-...`) is refused."""

    def config(self) -> str:
        return super().config() + "clientid_prefixes platform-\n"


def test_a_refused_bulk_connection_sends_everything_through_paho(tmp_path: Path) -> None:
    with PlatformOnly() as broker:
        p = Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port, ingest=False,
                     lease=False).start()
        listener = None
        try:
            assert p.connected.wait(20)
            listener = Listener(broker, "door/v1/+/cache")
            messages = [(f"d{i % 30}", "cache", b"%d" % i) for i in range(300)]
            p.publish_many(messages, timeout=5)
            listener.until(300)
            assert p.bulk_published == 0
            assert listener.count() == 300
            for i in range(30):
                assert listener.got[common.topic(f"d{i}", "cache")] == [
                    b"%d" % j for j in range(i, 300, 30)]
        finally:
            if listener is not None:
                listener.close()
            p.stop()


class DoorsRunning:
    """Simulated doors on their own event loop in a thread."""

    def __init__(self, doors: list[SimDoor]) -> None:
        self.doors = doors
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> DoorsRunning:
        self._thread.start()
        self._stop = asyncio.run_coroutine_threadsafe(self._event(), self.loop).result()
        self._tasks = [asyncio.run_coroutine_threadsafe(d.run(self._stop), self.loop)
                       for d in self.doors]
        return self

    @staticmethod
    async def _event() -> asyncio.Event:
        return asyncio.Event()

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        for t in self._tasks:
            t.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "paho"])
def test_a_lost_card_reaches_every_door_once_on_a_per_door_site(db_url: str, bulk: bool) -> None:
    """150 simulated doors, each checking its pieces and file with its own cache key: the lost
    card's delta reaches every one, each piece once, on the bulk connection (or through paho
    with it switched off), and the databases agree (SQLite and PostgreSQL)."""
    site = SiteKit(per_door=True)
    store = Store(db_url)
    reg = CardRegistry(store, site.keys)
    today = dt.date.today()
    reg.issue("ab" * 8, "r-1", "101", [0], today - dt.timedelta(days=1), today + dt.timedelta(days=30))
    held = reg.version()
    signer_doors = [f"city.d{i}" for i in range(150)]
    from reference_platform.door_signing import DoorSigner

    signer = DoorSigner(site.keys)
    with Mosquitto() as broker:
        doors = [SimDoor(d, [(broker.host, broker.port)], whitelist=held,
                         cache_key=signer.key("cache", d)) for d in signer_doors]
        listener = Listener(broker, "door/v1/+/cache")
        p = Platform(store, broker.host, broker.port, ingest=False, site_keys=site.keys)
        p.fanout_bulk = bulk
        registry_store = Store(db_url)
        attach(p, CardRegistry(registry_store, site.keys))
        try:
            with DoorsRunning(doors), p:
                announced = p.wait_cache_states(signer_doors, lambda s: True, 60)
                assert sorted(announced) == sorted(signer_doors), "the doors did not announce themselves"
                reg.report_lost("ab" * 8)
                result = sync(p, reg, signer_doors, timeout=30)
                assert result == {d: f"updated to {reg.version()}" for d in signer_doors}
                assert all(d.whitelist == reg.version() and d.refused == 0 for d in doors)
                pieces = len(signer.tags("city.d0").pieces(signer.whitelist_for(
                    "city.d0", reg.update_for(held) or b"")))
                listener.until(pieces * len(doors))
                time.sleep(0.3)  # a duplicate would come now
                assert {t: len(v) for t, v in listener.got.items()} == {
                    common.topic(d, "cache"): pieces for d in signer_doors}
                assert p.bulk_published == (pieces * len(doors) if bulk else 0)
        finally:
            listener.close()
            registry_store.close()
            store.close()


def test_the_doors_answers_cost_the_platform_no_packet_back(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A door's whitelist state reaches the platform at QoS 0 (the door publishes it at QoS 1,
    retained): 16,900 answers to a fan-out are 16,900 packets read, none written back, and
    every one is taken."""
    import logging

    with Mosquitto() as broker:
        p = Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port, ingest=False,
                     lease=False).start()
        try:
            assert p.connected.wait(20)
            p._client.enable_logger(logging.getLogger("paho-under-test"))
            caplog.set_level(logging.DEBUG, logger="paho-under-test")
            doors = [f"city.d{i}" for i in range(300)]
            answers = [(common.topic(d, "cache_state"), encode_cache_state(7))
                       for d in doors]
            got = p.wait_cache_states(doors, lambda s: s["version"] == 7, 30, then=lambda: (
                fanout_writer.publish_all(broker.host, broker.port, answers)))
            assert len(got) == 300
            assert not [r for r in caplog.records if "PUBACK" in r.getMessage()
                        and "Sending" in r.getMessage()]
            assert [r for r in caplog.records if "Received PUBLISH" in r.getMessage()]
        finally:
            p.stop()


def test_the_bulk_connection_logs_in_as_the_platform_on_a_broker_with_access_control(
        tmp_path: Path) -> None:
    """On a broker with access control only the platform user may publish to the doors: the
    fan-out's own connection logs in as that user, so its messages are delivered, none of
    them sent again through paho."""
    from host_tools.services.mosquitto import BrokerAuth

    auth = BrokerAuth({"@ingest": "platform-pw", "%watch": "watch-pw"})
    with Mosquitto(auth=auth) as broker:
        p = Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port, ingest=False,
                     lease=False, username="@ingest", password="platform-pw").start()
        got: list[str] = []
        ready = threading.Event()
        watch = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="platform-watch")
        watch.username_pw_set("%watch", "watch-pw")
        watch.on_connect = lambda c, *a: c.subscribe("door/v1/+/cache", qos=1)
        watch.on_subscribe = lambda *a: ready.set()
        watch.on_message = lambda c, u, msg: got.append(msg.topic)
        try:
            assert p.connected.wait(20)
            watch.connect(broker.host, broker.port)
            watch.loop_start()
            assert ready.wait(20)
            p.publish_many([(f"city.d{i}", "cache", b"piece") for i in range(150)], timeout=20)
            deadline = time.monotonic() + 20
            while len(got) < 150 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert p.bulk_published == 150
            assert sorted(got) == sorted(common.topic(f"city.d{i}", "cache") for i in range(150))
        finally:
            watch.loop_stop()
            watch.disconnect()
            p.stop()
