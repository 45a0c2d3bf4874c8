"""A simulated door's whitelist state is retained, as the firmware publishes it
(firmware/cache_sync.py `publish_state`, docs/protocol.md: `cache_state` retained): a
subscriber that comes later finds what the door holds, after its announce and after it took a
file. Real mosquitto, a door that checks its pieces with its own key."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt

from host_tools.cards.kit import SiteKit
from host_tools.doorsim import SimDoor
from host_tools.services.mosquitto import Mosquitto
from reference_platform.door_signing import DoorSigner
from tests.host.services.test_platform_fanout_bulk import DoorsRunning
from tests.host.unit.test_doorsim_whitelist import _delta
from wire import common
from wire.platform import decode_cache_state


def _retained_state(broker: Mosquitto, device: str, wait: float = 3.0) -> dict[str, object] | None:
    """What a subscriber that comes now gets on the door's exact `cache_state` topic: the
    retained state, or None when the broker keeps none."""
    got: list[dict[str, object]] = []
    arrived = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.append(decode_cache_state(msg.payload))
            arrived.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"late-{time.monotonic_ns()}")
    c.on_message = on_message
    c.connect(broker.host, broker.port)
    c.subscribe(common.topic(device, "cache_state"), qos=1)
    c.loop_start()
    try:
        arrived.wait(wait)
    finally:
        c.loop_stop()
        c.disconnect()
    return got[-1] if got else None


def _publish(broker: Mosquitto, topic: str, payloads: list[bytes]) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="platform-test")
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        for p in payloads:
            c.publish(topic, p, qos=1).wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()


def _until(cond: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_state_a_door_announces_and_the_one_it_reports_after_a_file_are_retained() -> None:
    site = SiteKit(per_door=True)
    signer = DoorSigner(site.keys)
    device = "city.d1"
    door = SimDoor(device, [], whitelist=1, cache_key=signer.key("cache", device))
    with Mosquitto() as broker:
        door.brokers = [(broker.host, broker.port)]
        with DoorsRunning([door]):
            _until(lambda: door.connects == 1 and door._client is not None, "the door did not connect")
            # `connects` counts the CONNACK and the announcement follows it: a subscriber that
            # comes before the cache_state gets it live (no retain flag), so it asks again.
            _until(lambda: (_retained_state(broker, device, wait=1) or {}).get("version") == 1,
                   "the announced state is not retained")

            pieces = signer.tags(device).pieces(signer.whitelist_for(device, _delta(site)))
            _publish(broker, common.topic(device, "cache"), pieces)
            _until(lambda: door.whitelist == 2, "the door did not take the file")
            assert door.refused == 0
            _until(lambda: (_retained_state(broker, device) or {}).get("version") == 2,
                   "the state after the file is not retained")
            assert door.connects == 1  # no reconnect announced it again: the report itself was kept
