"""A real (virtual) door and the platform through RabbitMQ's MQTT plugin, a strict MQTT 3.1.1
broker: no shared subscriptions, retained messages never reach a wildcard subscription, and a
device id's dots come back as topic levels. The platform starts after the door, learns it by
its announce request, sends it a whitelist, and stores the door's swipes under signed acks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.cards.kit import SiteKit
from host_tools.pn532_emu import PN532Emulator
from host_tools.services.rabbitmq import RabbitCluster
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import provision
from host_tools.vdev.swipe import swipe_local
from host_tools.vdev.swipe import wait_for as wait_until
from reference_platform.cards import CardRegistry
from reference_platform.distribute import sync
from reference_platform.ingest import Platform
from reference_platform.store import Store

DEVICE = "rabbit.b1.d0"  # dots: RabbitMQ hands them back as levels
TODAY = dt.date.today()
YEAR = dt.timedelta(days=365)


def door_presence(port: int) -> bytes | None:
    """The door's retained presence, read on its exact topic (where RabbitMQ does deliver it)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    c.on_message = lambda _c, _u, m: got.append(m.payload)
    c.connect("127.0.0.1", port)
    c.subscribe(f"door/v1/{DEVICE}/presence", 1)
    c.loop_start()
    try:
        wait_until(lambda: bool(got), timeout=2, what="")
    except AssertionError:
        pass
    finally:
        c.loop_stop()
        c.disconnect()
    return got[0] if got else None


@pytest.fixture
def rabbit() -> Iterator[RabbitCluster]:
    with RabbitCluster(1) as cluster:
        yield cluster


def test_a_door_and_the_platform_work_through_rabbitmq(tmp_path: Path, postgres_server,  # type: ignore[no-untyped-def]
                                                       rabbit: RabbitCluster) -> None:
    db_url = postgres_server.create_database("rabbitdoor")
    site = SiteKit()
    port = rabbit.nodes[0].mqtt_port
    dev = VirtualDevice(tmp_path / "door").start()
    platform = None
    link = io = None
    try:
        provision(dev.pty, config=site.door_config(DEVICE, door_no=0,
                                                   broker={"host": "127.0.0.1", "port": port}),
                  keys=site.door_keys())
        dev.restart()
        io = VirtualIO(dev.io_addr)
        emu = PN532Emulator()
        link = emu.connect(dev.reader_addr)
        wait_until(lambda: door_presence(port) is not None, what="the door's retained presence")
        store = Store(db_url)
        platform = Platform(store, "127.0.0.1", port, ack_key=site.command_key).start()
        # The door's retained presence never reaches the platform's wildcard subscription
        # here: it is learnt through the announce request.
        wait_until(lambda: (store.device(DEVICE) or {}).get("online"), what="the door's presence")
        assert wait_until(lambda: platform.events_filter, what="the events subscription") == \
            "door/v1/+/events"  # RabbitMQ has no shared subscriptions: a plain one
        reg = CardRegistry(store, site.keys)
        card, ref = site.issue()
        reg.issue(ref.hex(), "r-1", "101", [0], TODAY - YEAR, TODAY + YEAR)
        assert sync(platform, reg) == {DEVICE: f"updated to {reg.version()}"}
        assert swipe_local(io, emu, card) is True
        wait_until(lambda: store.count(DEVICE) > 0
                   and (store.device(DEVICE) or {}).get("ack_upto") == store.count(DEVICE),
                   what="the swipe stored and acknowledged")
        assert [e[0] for e in store.events(DEVICE)] == list(range(1, store.count(DEVICE) + 1))
    finally:
        if platform is not None:
            platform.stop()
        if link is not None:
            link.close()
        if io is not None:
            io.close()
        dev.stop()
