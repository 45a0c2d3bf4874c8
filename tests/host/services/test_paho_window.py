"""The platform's MQTT client (reference_platform/paho_window.py) sends more messages than its
window holds, through a real mosquitto: every one arrives, once, in the order published, the
waiting ones found through its own queue (paho's private names still there); messages
published while the broker is down are all sent after it comes back."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
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
            # No reconnect before the receiver has subscribed: the broker keeps nothing for a
            # topic nobody subscribes to, and paho retries on its own timer.
            tx.loop_stop()
            infos = [tx.publish("w/b", str(i).encode(), qos=1) for i in range(N)]
            broker.start()
            rx = Receiver(broker, "w/#")
            tx.loop_start()
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


def test_a_burst_of_messages_is_read_in_few_reads_each_once_in_order_across_a_restart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fan-out's answers come as a burst of small packets: the client reads them in large
    reads (paho alone makes three or four `recv` calls a packet), handles each once and in
    order, packets cut across reads included, and a new connection after a broker restart
    starts from nothing of the old one's bytes."""
    from reference_platform import fanout_writer

    reads: list[int] = []
    plain = mqtt.Client._sock_recv

    def counted(self: mqtt.Client, bufsize: int) -> bytes:
        data = plain(self, bufsize)
        reads.append(len(data))
        return data

    monkeypatch.setattr(mqtt.Client, "_sock_recv", counted)
    monkeypatch.setattr("reference_platform.paho_window.READ_SIZE", 1000)  # packets cut across reads
    with Mosquitto() as broker:
        got: list[tuple[int, bytes]] = []
        ready = threading.Event()
        c = WindowedClient(CallbackAPIVersion.VERSION2, client_id=f"rx-{uuid.uuid4().hex[:6]}")
        assert c.fast
        c.reconnect_delay_set(1, 1)
        c.on_connect = lambda c, *a: c.subscribe([("b/#", 0), ("q/#", 1)])
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = lambda c, u, msg: got.append((msg.topic, bytes(msg.payload)))
        c.connect(broker.host, broker.port)
        c.loop_start()
        try:
            for round_ in range(2):
                assert ready.wait(20)
                got.clear()
                reads.clear()
                messages = [(("b/x" if i % 2 else "q/y"), b"%d-%d" % (round_, i) * (1 + i % 9))
                            for i in range(3000)]
                assert fanout_writer.publish_all(broker.host, broker.port, messages) == []
                deadline = time.monotonic() + 30
                while len(got) < len(messages) and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.2)  # a duplicate would come now
                for topic in ("b/x", "q/y"):  # QoS 0 and QoS 1: in order on each topic
                    assert [p for t, p in got if t == topic] == [p for t, p in messages if t == topic]
                assert len(got) == len(messages)
                assert len(reads) < len(messages) / 4  # not three or four reads a packet
                broker.stop()  # the same port again: the client reconnects
                ready.clear()
                broker.start()
        finally:
            c.loop_stop()
            c.disconnect()


def test_a_burst_over_tls_is_taken_many_records_a_turn(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: object) -> None:
    """Over TLS a read returns one record and mosquitto makes each small packet a record: a
    fan-out's answers would each cost a `select` and a turn of the network loop. The client
    reads on while records are there: every answer arrives, once, in order, in far fewer
    turns than answers."""
    from pathlib import Path

    from host_tools.services.mosquitto import TLSListener, free_port
    from host_tools.services.tlsgen import CA
    from reference_platform import fanout_writer

    turns: list[int] = []
    own = WindowedClient.loop_read

    def counted(self: WindowedClient, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        turns.append(1)
        return own(self, max_packets)

    monkeypatch.setattr(WindowedClient, "loop_read", counted)
    ca = CA(Path(str(tmp_path)) / "pki")
    server = ca.server()
    plain = free_port()
    with Mosquitto(tls=TLSListener(ca.cert, server.cert, server.key), plain_port=plain) as broker:
        got: list[tuple[str, bytes]] = []
        ready = threading.Event()
        c = WindowedClient(CallbackAPIVersion.VERSION2, client_id=f"rx-{uuid.uuid4().hex[:6]}")
        assert c.fast
        c.tls_set(ca_certs=str(ca.cert))
        c.on_connect = lambda c, *a: c.subscribe("b/#", 0)
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = lambda c, u, msg: got.append((msg.topic, bytes(msg.payload)))
        c.connect(broker.host, broker.port)
        c.loop_start()
        try:
            assert ready.wait(20)
            turns.clear()
            messages = [(f"b/{i % 7}", b"%d" % i * (1 + i % 5)) for i in range(3000)]
            assert fanout_writer.publish_all(broker.host, plain, messages) == []
            deadline = time.monotonic() + 30
            while len(got) < len(messages) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)  # a duplicate would come now
            assert len(got) == len(messages)
            for topic in {t for t, _ in messages}:  # in order on each topic
                assert [p for t, p in got if t == topic] == [p for t, p in messages if t == topic]
            assert len(turns) < len(messages) / 4  # not one turn an answer
        finally:
            c.loop_stop()
            c.disconnect()
