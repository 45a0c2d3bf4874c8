"""The platform on any MQTT 3.1.1 broker and on a broker cluster, with PostgreSQL: simulated
doors (host_tools/doorsim.py, protocol v1 on the wire) against mosquitto and RabbitMQ's MQTT
plugin, two platform instances on one database, and a three-node RabbitMQ cluster losing a node
mid-run. Every event is stored once, and the platform learns the doors without retained
messages reaching its wildcard subscriptions."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from host_tools.doorsim import SimDoor
from host_tools.services.mosquitto import Mosquitto
from host_tools.services.rabbitmq import RabbitCluster
from reference_platform.ingest import Platform
from reference_platform.store import Store


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitCluster]:
    with RabbitCluster(1) as cluster:
        yield cluster


class DoorsRunning:
    """The doors on their own event loop in a thread, from `with` to its end."""

    def __init__(self, doors: list[SimDoor]) -> None:
        self.doors = doors
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> DoorsRunning:
        self._thread.start()
        self._stop = asyncio.run_coroutine_threadsafe(self._make_stop(), self.loop).result()
        self._tasks = [asyncio.run_coroutine_threadsafe(d.run(self._stop), self.loop) for d in self.doors]
        return self

    @staticmethod
    async def _make_stop() -> asyncio.Event:
        return asyncio.Event()

    def call(self, fn: Callable[[], object]) -> None:
        """Run `fn` on the doors' loop (the doors are not thread-safe)."""
        self.loop.call_soon_threadsafe(fn)

    def wait(self, done: Callable[[], bool], timeout: float = 120.0,
             during: Callable[[float], None] | None = None) -> None:
        """Until `done()` holds (checked every 0.2 s); `during(elapsed)` in between."""
        started = time.monotonic()
        while not done():
            elapsed = time.monotonic() - started
            assert elapsed < timeout, "the doors did not get there in time: " + ", ".join(
                f"{d.device} backlog {d.backlog}" for d in self.doors if d.backlog)[:600]
            if during is not None:
                during(elapsed)
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        for t in self._tasks:
            t.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def assert_stored_once(store: Store, doors: list[SimDoor]) -> None:
    for d in doors:
        seqs = [e[0] for e in store.events(d.device)]
        assert seqs == list(range(1, d.next_seq)), f"{d.device}: {len(seqs)} stored of {d.next_seq - 1}"


@pytest.mark.parametrize("broker_kind, database", [("mosquitto", "sqlite"), ("rabbitmq", "postgresql")])
def test_two_platforms_on_one_database_store_every_event_once(broker_kind: str, database: str,
                                                              tmp_path: Path, request: pytest.FixtureRequest,
                                                              rabbit: RabbitCluster) -> None:
    db_url = str(tmp_path / "p.db")
    if database == "postgresql":
        db_url = request.getfixturevalue("postgres_server").create_database(f"b{broker_kind}")
    mosquitto = Mosquitto().start() if broker_kind == "mosquitto" else None
    host, port = (mosquitto.host, mosquitto.port) if mosquitto else ("127.0.0.1", rabbit.nodes[0].mqtt_port)
    doors = [SimDoor(f"sim.{broker_kind}.d{i}", [(host, port)]) for i in range(12)]
    for d in doors:
        for _ in range(150):
            d.record()
    # The doors are online first: their retained presence is already at the broker when the
    # platforms start (RabbitMQ never hands it to a wildcard subscription: the platform's
    # announce request is how it learns them).
    running = DoorsRunning(doors).__enter__()
    a = b = None
    try:
        running.wait(lambda: all(d.connects for d in doors), timeout=30)
        a = Platform(Store(db_url), host, port).start()
        b = Platform(Store(db_url), host, port).start()
        assert a.connected.wait(20) and b.connected.wait(20)
        running.wait(lambda: all(d.backlog == 0 for d in doors))
        store = Store(db_url)
        assert_stored_once(store, doors)
        deadline = time.monotonic() + 20
        while not all((store.device(d.device) or {}).get("online") for d in doors):
            assert time.monotonic() < deadline, "the platform did not learn every door's presence"
            time.sleep(0.2)
        assert all(d.announces >= 1 for d in doors)
        expected = "$share/ingest/door/v1/+/events" if mosquitto else "door/v1/+/events"
        assert a.events_filter == b.events_filter == expected
    finally:
        running.__exit__()
        for p in (a, b):
            if p is not None:
                p.stop()
        if mosquitto is not None:
            mosquitto.stop()


def test_a_cluster_node_dies_mid_run_and_nothing_is_lost(postgres_server) -> None:  # type: ignore[no-untyped-def]
    """Three RabbitMQ nodes; doors spread over them, each with the list of all three; two
    platforms on one PostgreSQL, on the nodes that stay; the middle node dies while the doors
    record."""
    db_url = postgres_server.create_database("cluster")
    with RabbitCluster(3) as cluster:
        nodes = [("127.0.0.1", n.mqtt_port) for n in cluster.nodes]
        doors = [SimDoor(f"sim.cluster.d{i}", nodes[i % 3:] + nodes[:i % 3]) for i in range(15)]
        a = Platform(Store(db_url), *nodes[0]).start()
        b = Platform(Store(db_url), *nodes[2]).start()
        killed: list[float] = []

        try:
            assert a.connected.wait(30) and b.connected.wait(30)
            with DoorsRunning(doors) as running:

                def during(elapsed: float) -> None:
                    if elapsed < 8:
                        for d in doors:
                            running.call(d.record)
                    if elapsed > 3 and not killed:
                        cluster.kill(1)
                        killed.append(elapsed)

                running.wait(lambda: bool(killed) and all(d.backlog == 0 for d in doors)
                             and all(d.next_seq > 20 for d in doors), timeout=180, during=during)
            assert_stored_once(Store(db_url), doors)
            moved = [d for i, d in enumerate(doors) if i % 3 == 1]
            assert all(d.connects >= 2 for d in moved), "the doors on the dead node reconnected"
        finally:
            a.stop()
            b.stop()
