"""Two platform instances on one database: both ingest, one (the lease holder) does the
singleton work, so a door that comes online gets one time message, not one per instance."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from host_tools.services.mosquitto import Mosquitto
from reference_platform.ingest import Platform
from reference_platform.lease import AdvisoryLease, TableLease, lease_for
from reference_platform.store import Store
from wire import common
from wire.door import encode_presence

DOOR = "site.b1.d7"


def test_the_lease_is_held_by_one_holder_until_it_expires_or_is_dropped(db_url: str) -> None:
    a, b = Store(db_url), Store(db_url)
    assert a.take_lease("x", "A", 100.0, 115.0)
    assert not b.take_lease("x", "B", 110.0, 125.0)  # A's term runs
    assert a.take_lease("x", "A", 110.0, 125.0)  # renewed
    assert not b.take_lease("x", "B", 120.0, 135.0)
    assert b.take_lease("x", "B", 126.0, 141.0)  # A's term is over: B takes it
    assert not a.take_lease("x", "A", 127.0, 142.0)
    b.drop_lease("x", "B")
    assert a.take_lease("x", "A", 128.0, 143.0)  # dropped at a clean stop: at once
    a.drop_lease("x", "B")  # not B's any more: nothing happens
    assert not b.take_lease("x", "B", 129.0, 144.0)


def test_table_lease_excludes_a_second_instance_and_hands_over_on_release(tmp_path: Path) -> None:
    db = str(tmp_path / "p.db")
    one, two = TableLease(Store(db), "job", "one"), TableLease(Store(db), "job", "two")
    assert one.acquire() and one.held()
    assert not two.acquire() and not two.held()
    one.release()
    assert not one.held()
    assert two.acquire() and two.held()
    assert isinstance(lease_for(Store(db), "job", "x"), TableLease)


def test_on_postgresql_the_lease_is_an_advisory_lock_freed_with_its_session(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    one = lease_for(Store(db_url), "job", "one")
    two = lease_for(Store(db_url), "job", "two")
    other = lease_for(Store(db_url), "another job", "two")
    assert isinstance(one, AdvisoryLease)
    try:
        assert one.acquire() and one.held()
        assert not two.acquire() and not two.held()
        assert other.acquire()  # another name, another lock
        assert one.acquire()  # renewing: still its own
        one.release()
        assert two.acquire() and two.held()
        two._conn.close()  # the holder's session ends (a crash): the lock goes with it
        assert one.acquire()
        assert not two.acquire()  # it reconnects and finds the lock taken
    finally:
        for lease in (one, two, other):
            lease.release()


class TimeSpy:
    def __init__(self, b: Mosquitto) -> None:
        self.times: list[bytes] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="spy")
        self.c.on_message = lambda c, u, m: self.times.append(m.payload)
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.connect(b.host, b.port)
        self.c.subscribe(common.topic(DOOR, "time"), 1)
        self.c.loop_start()
        assert subscribed.wait(10)

    def door_online(self, boot: int) -> None:
        self.c.publish(common.topic(DOOR, "presence"), encode_presence(True, boot, "t"),
                       qos=1).wait_for_publish(5)

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def wait_until(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_one_time_message_per_door_from_two_instances_and_a_takeover(db_url: str) -> None:
    db = db_url
    with Mosquitto() as b:
        first = Platform(Store(db), b.host, b.port, lease_term_s=6.0).start()
        second = Platform(Store(db), b.host, b.port, lease_term_s=6.0).start()
        spy = TimeSpy(b)
        try:
            wait_until(lambda: first.connected.is_set() and second.connected.is_set())
            time.sleep(0.3)  # their subscriptions are in place
            assert first.leader() and not second.leader()
            spy.door_online(1)
            wait_until(lambda: len(spy.times) >= 1)
            time.sleep(1.0)  # a second instance's message would have come by now
            assert len(spy.times) == 1
            first.stop()  # the holder goes: the other takes the work over
            wait_until(second.leader)
            spy.door_online(2)
            wait_until(lambda: len(spy.times) >= 2)
            time.sleep(1.0)
            assert len(spy.times) == 2
        finally:
            spy.stop()
            first.stop()
            second.stop()
