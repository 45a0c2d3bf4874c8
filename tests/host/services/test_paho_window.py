"""The platform's MQTT client (reference_platform/paho_window.py) sends more messages than its
window holds, through a real mosquitto: every one arrives, once, in the order published, the
waiting ones found through its own queue (paho's private names still there); messages
published while the broker is down are all sent after it comes back."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from host_tools.services.mosquitto import Mosquitto
from reference_platform.paho_window import WindowedClient

N = 400


class Receiver:
    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.got: list[int] = []
        self.all_in = threading.Event()
        self.ready = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"rx-{uuid.uuid4().hex[:6]}")
        self.c.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        assert self.ready.wait(20)

    def _on_message(self, c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.got.append(int(msg.payload))
        if len(self.got) >= N:
            self.all_in.set()

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _sender(broker: Mosquitto, window: int) -> WindowedClient:
    c = WindowedClient(CallbackAPIVersion.VERSION2, client_id=f"tx-{uuid.uuid4().hex[:6]}")
    c.max_inflight_messages_set(window)
    c.reconnect_delay_set(1, 1)
    assert c.fast  # paho's private names are where this module expects them
    return c


def test_more_messages_than_the_window_arrive_in_order() -> None:
    with Mosquitto() as broker:
        rx = Receiver(broker, "w/#")
        tx = _sender(broker, 5)
        tx.connect(broker.host, broker.port)
        tx.loop_start()
        try:
            infos = [tx.publish("w/a", str(i).encode(), qos=1) for i in range(N)]
            waited = len(tx._waiting)
            for info in infos:
                info.wait_for_publish(30)
            assert rx.all_in.wait(30)
            assert waited > 0  # most waited for a place in the window
            assert rx.got == list(range(N))
            assert not tx._waiting and not tx._out_messages
        finally:
            tx.loop_stop()
            tx.disconnect()
            rx.stop()


def test_messages_published_while_the_broker_is_down_are_sent_when_it_returns() -> None:
    with Mosquitto() as broker:
        tx = _sender(broker, 5)
        tx.connect(broker.host, broker.port)
        tx.loop_start()
        try:
            broker.stop()
            deadline = time.monotonic() + 10
            while tx.is_connected() and time.monotonic() < deadline:
                time.sleep(0.05)
            infos = [tx.publish("w/b", str(i).encode(), qos=1) for i in range(N)]
            broker.start()
            rx = Receiver(broker, "w/#")
            try:
                assert rx.all_in.wait(60)
                deadline = time.monotonic() + 30  # every PUBACK in (paho's info for a message
                while tx._out_messages and time.monotonic() < deadline:  # sent offline keeps its error)
                    time.sleep(0.05)
                assert not tx._out_messages and len(infos) == N
                assert sorted(set(rx.got)) == list(range(N))  # each arrived (a resend may repeat one)
            finally:
                rx.stop()
        finally:
            tx.loop_stop()
            tx.disconnect()
