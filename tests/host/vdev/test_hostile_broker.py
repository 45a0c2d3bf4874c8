"""Someone with publish rights on the broker against a virtual door (real MicroPython firmware,
mosquitto, the reference platform, a fault proxy that counts the door's connections):
oversized, deeply nested and retained messages on the door's topics cost the door those
messages only, never its connection or its deliveries; a retained time far in the future
cannot take the clock, and a signed fresh time repairs one an unsigned message set wrong."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from host_tools.cards.kit import SiteKit
from host_tools.netfault import FaultProxy
from host_tools.pn532_emu import PN532Emulator
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import provision
from host_tools.vdev.swipe import swipe_local
from host_tools.vdev.swipe import wait_for as wait_until
from reference_platform.cards import CardRegistry
from reference_platform.commands import command_key
from reference_platform.distribute import sync
from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire import codes as ev
from wire import common
from wire.common import SITE_TZ_MIN
from wire.platform import decode_presence, encode_ack, encode_time

DEVICE = "hostile.b1.d0"
DAY = 86400
TODAY = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=SITE_TZ_MIN)).date()  # the site's day


class Rig:
    def __init__(self, tmp: Path, platform_up: bool = True) -> None:
        self.site = SiteKit()
        self.broker = Mosquitto().start()
        self.proxy = FaultProxy(self.broker.host, self.broker.port).start()
        self.store = Store(str(tmp / "p.db"))
        self.platform = Platform(self.store, self.broker.host, self.broker.port,
                                 ack_key=command_key(self.site.keys))
        if platform_up:
            self.platform.start()
        self.reg = CardRegistry(self.store, self.site.keys)
        self.hostile = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile")
        self.hostile.connect(self.broker.host, self.broker.port)
        self.hostile.loop_start()
        self.dev = VirtualDevice(tmp / "door").start()
        provision(self.dev.pty, config=self.site.door_config(
            DEVICE, door_no=0, broker={"host": self.proxy.host, "port": self.proxy.port,
                                       "keepalive": 10}), keys=self.site.door_keys())
        self.dev.restart()
        self.emu = PN532Emulator()
        self.link = self.emu.connect(self.dev.reader_addr)
        self.io = VirtualIO(self.dev.io_addr)

    def send(self, leaf: str, payload: bytes, retain: bool = False) -> None:
        self.hostile.publish(common.topic(DEVICE, leaf), payload, qos=1,
                             retain=retain).wait_for_publish(5)

    def status(self) -> dict[str, Any]:
        return self.io.status()

    def reboot(self) -> None:
        self.io.close()
        self.link.close()
        self.dev.restart()
        self.link = self.emu.connect(self.dev.reader_addr)
        self.io = VirtualIO(self.dev.io_addr)

    def events(self, code: int) -> list[tuple[Any, ...]]:
        return [e for e in self.store.events(DEVICE) if e[1] == code]

    def close(self) -> None:
        self.io.close()
        self.link.close()
        self.dev.stop()
        self.hostile.loop_stop()
        self.hostile.disconnect()
        self.platform.stop()
        self.proxy.stop()
        self.broker.stop()


@pytest.fixture()
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def nested(depth: int) -> bytes:
    return b'{"v": 1, "upto": ' + b"[" * depth + b"]" * depth + b"}"


def test_oversized_nested_and_retained_messages_never_cut_the_door_off(rig: Rig) -> None:
    wait_until(lambda: rig.status().get("clock_trusted") is True, what="a trusted clock")
    big = b'{"v": 1, "upto": ' + b"9" * (16 * 1024) + b"}"
    for leaf in ("ack", "cmd", "time", "cache"):
        rig.send(leaf, big, retain=True)  # 16 KB, retained: it comes again at every connection
        rig.send(leaf, nested(2000))  # 4 KB of nesting: over every limit but the cache's
        if leaf != "cache":
            rig.send(leaf, nested(60))  # within the topic's limit, but nested 60 deep
    rig.send("ack", encode_ack(1), retain=True)  # unsigned, retained (see below)
    wait_until(lambda: sum(rig.status().get("refused", {}).values()) >= 12, what="the refusals")
    refused = rig.status()["refused"]
    assert refused == {"too_large": 8, "too_deep": 3, "bad_mac": 1}, refused
    # The door still delivers, on the connection it had.
    t = rig.io.set_input("rex", True)
    rig.io.wait_output("relay", True, timeout_s=10, after_ms=t)
    rig.io.set_input("rex", False)
    wait_until(lambda: rig.events(ev.ACCESS_GRANTED), what="the REX opening at the platform")
    assert rig.proxy.connections == 1
    assert rig.status().get("uplink_dropped", 0) == 0
    # After a reboot the retained ones come again: refused again, and the door delivers.
    rig.reboot()
    wait_until(lambda: len(rig.events(ev.BOOT)) == 2, what="the second boot at the platform")
    # 16 KB on cmd, time and cache again; the retained ack (it replaced the 16 KB one) reaches
    # the new subscription with its retain flag set: refused as stale.
    wait_until(lambda: rig.status().get("refused") == {"too_large": 3, "retained": 1},
               what="the retained messages refused again")
    assert rig.proxy.connections == 2 and rig.status().get("uplink_dropped", 0) == 0
    # The refusals are summarized in the journal (at most one record a minute), not one each.
    assert 1 <= len(rig.events(ev.INBOUND_REFUSED)) <= 2


def test_a_retained_time_400_days_ahead_then_a_reboot_leaves_cards_working(rig: Rig) -> None:
    card, ref = rig.site.issue()
    rig.reg.issue(ref.hex(), "r-1", "101", [0], TODAY - dt.timedelta(days=30),
                  TODAY + dt.timedelta(days=365))
    wait_until(lambda: DEVICE in rig.platform.cache_states, what="the door's cache state")
    assert sync(rig.platform, rig.reg) == {DEVICE: f"updated to {rig.reg.version()}"}
    future = int((time.time() + 400 * DAY) * 1000)
    rig.send("time", encode_time(future), retain=True)
    rig.reboot()
    wait_until(lambda: rig.status().get("clock_trusted") is True, what="a trusted clock")
    assert swipe_local(rig.io, rig.emu, card) is True
    wait_until(lambda: rig.events(ev.ACCESS_GRANTED), what="the grant at the platform")
    granted = rig.events(ev.ACCESS_GRANTED)[-1]
    assert granted[5] & common.FLAG_TIME_VALID and not granted[5] & common.FLAG_TIME_UNTRUSTED
    assert abs(granted[3] - time.time()) < 120  # the right time, not 400 days ahead
    assert rig.status()["refused"].get("retained", 0) >= 1


def test_a_signed_fresh_time_repairs_a_clock_an_unsigned_one_set_wrong(tmp_path: Path) -> None:
    r = Rig(tmp_path, platform_up=False)  # the platform is away: nobody signs a time
    try:
        card, ref = r.site.issue()
        # The door announces itself (retained) once its subscriptions are in: a time sent
        # before then, not retained, would reach nobody.
        online: list[bytes] = []
        r.hostile.on_message = lambda c, u, m: online.append(m.payload)
        r.hostile.subscribe(common.topic(DEVICE, "presence"), 1)
        wait_until(lambda: online, what="the door's presence (retained)")
        future = int((time.time() + 400 * DAY) * 1000)
        r.send("time", encode_time(future))  # unsigned, not retained: the clock is unset
        wait_until(lambda: r.status().get("clock_synced") is True, what="the clock set")
        assert r.status().get("clock_trusted") is False
        assert swipe_local(r.io, r.emu, card) is False  # an untrusted clock: offline policy
        r.platform.start()
        wait_until(lambda: r.status().get("clock_trusted") is True, timeout=90,
                   what="the signed time")  # the door asks again within a minute
        r.reg.issue(ref.hex(), "r-1", "101", [0], TODAY - dt.timedelta(days=1),
                    TODAY + dt.timedelta(days=30))
        wait_until(lambda: DEVICE in r.platform.cache_states, what="the door's cache state")
        sync(r.platform, r.reg)
        assert swipe_local(r.io, r.emu, card) is True
        wait_until(lambda: r.events(ev.ACCESS_GRANTED), what="the grant at the platform")
        granted = r.events(ev.ACCESS_GRANTED)[-1]
        assert abs(granted[3] - time.time()) < 120 and not granted[5] & common.FLAG_TIME_UNTRUSTED
        # What was recorded under the wrong clock keeps its flag, and the two time_set events
        # (unsigned: arg 0, signed: arg 1) let the platform place it.
        denied = r.events(ev.ACCESS_DENIED)[0]
        assert denied[5] & common.FLAG_TIME_UNTRUSTED and denied[3] > time.time() + 399 * DAY
        assert [e[6] for e in r.events(ev.TIME_SET)] == [0, 1]
    finally:
        r.close()


def test_a_door_without_a_trusted_time_answers_an_announce_with_a_fresh_nonce(tmp_path: Path) -> None:
    """A platform back after its outage asks every door to announce itself; the nonce a door
    drew at connecting may be older than a signed time may answer, so a door that still has
    no trusted time draws a new one (else its cards waited for its next re-announce)."""
    r = Rig(tmp_path, platform_up=False)  # the platform is away: nobody signs a time
    nonces: list[str] = []
    r.hostile.on_message = lambda c, u, m: nonces.append(
        decode_presence(m.payload).get("nonce", ""))
    try:
        wait_until(lambda: r.proxy.connections == 1, what="the door on the broker")
        r.hostile.subscribe(common.topic(DEVICE, "presence"), 1)
        wait_until(lambda: len(nonces) == 1, what="the door's presence (retained)")
        r.hostile.publish(common.ANNOUNCE_TOPIC, b"", qos=1).wait_for_publish(5)
        wait_until(lambda: len(nonces) == 2, what="the door's answer to announce")
        assert nonces[1] and nonces[1] != nonces[0]
        assert r.status().get("clock_trusted") is not True
        r.platform.start()  # its own announce, then a time signed with the fresh nonce
        wait_until(lambda: r.status().get("clock_trusted") is True, timeout=15,
                   what="the signed time")
    finally:
        r.close()
