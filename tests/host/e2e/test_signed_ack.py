"""A broker user cannot make a door erase events: only an acknowledgement with the platform's
MAC (the site's `command` key) frees journal space. Real mosquitto, the real device code under
MicroPython, the real platform (docs/protocol.md, "Acknowledgements")."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from board.vdev.flashsim import FlashSim
from firmware.journal import Journal
from host_tools.services.mosquitto import Mosquitto
from reference_platform.ingest import Platform
from reference_platform.store import Store
from tests.host.e2e.test_journal_overflow import BLOCKS, ID, Door, broker, wait_until
from wire import common
from wire.platform import decode_events, encode_ack

__all__ = ["broker"]
KEY = bytes(range(16))


def acked_on_flash(image: Path, tmp: Path) -> int:
    copy = tmp / "inspect.img"
    shutil.copyfile(image, copy)
    return Journal(FlashSim(path=str(copy), block_size=4096, block_count=BLOCKS)).acked


class Spy:
    """A broker user: sees the door's batches, publishes what it likes on the door's topics."""

    def __init__(self, b: Mosquitto) -> None:
        self.last_sent = 0
        self._lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="intruder")
        self.c.on_message = self._on_message
        self.c.connect(b.host, b.port)
        self.c.subscribe(common.topic(ID, "events"), 1)
        self.c.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        events = decode_events(msg.payload)
        with self._lock:
            self.last_sent = max(self.last_sent, events[-1][0])

    def publish(self, leaf: str, payload: bytes) -> None:
        self.c.publish(common.topic(ID, leaf), payload, qos=1).wait_for_publish(5)

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_a_forged_ack_for_what_the_door_sent_frees_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    image = tmp_path / "flash.img"
    spy = Spy(broker)
    try:
        door = Door(image, broker, 300, 1, 0, "key=" + KEY.hex())
        wait_until(lambda: spy.last_sent >= 128)  # its window is out; no platform acknowledges
        sent = spy.last_sent
        spy.publish("ack", encode_ack(sent))  # what the attacker sent
        spy.publish("ack", encode_ack(sent, 1, "00" * 32))  # with a made-up tag
        time.sleep(1.0)
        door.kill()
    finally:
        spy.stop()
    assert acked_on_flash(image, tmp_path) == 0  # nothing freed
    with Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port, ack_key=KEY) as platform:
        Door(image, broker, 0, 2, 0, "key=" + KEY.hex()).finish()
        assert [e[0] for e in platform.store.events(ID)] == list(range(1, 301))
        assert platform.store.lost(ID) == [] and platform.store.missing(ID) == []
    assert acked_on_flash(image, tmp_path) == 300  # the platform's signed acks did free them


def test_a_commissioned_door_ignores_a_platform_that_cannot_sign(tmp_path: Path,
                                                                 broker: Mosquitto) -> None:
    image = tmp_path / "flash.img"
    with Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port) as platform:
        door = Door(image, broker, 50, 1, 0, "key=" + KEY.hex())
        wait_until(lambda: platform.store.ack_upto(ID) == 50)  # stored, acknowledged unsigned
        time.sleep(1.0)
        door.kill()
    assert acked_on_flash(image, tmp_path) == 0
