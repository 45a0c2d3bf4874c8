"""The torture run's fault switches on real parts: the proxy drops every connection at once,
mosquitto dies by SIGKILL and comes back on its port."""

from __future__ import annotations

import socket
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hil.broker import Mosquitto
from hil.netfault import FaultProxy


def test_the_proxy_drops_every_connection_at_once() -> None:
    with Mosquitto() as b, FaultProxy(b.host, b.port) as proxy:
        gone = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="victim")
        c.on_disconnect = lambda *a: gone.set()
        c.connect(proxy.host, proxy.port)
        c.loop_start()
        try:
            c.publish("t/x", b"1", qos=1).wait_for_publish(5)  # connected through the proxy
            assert proxy.drop_connections() == 1
            assert gone.wait(5)
            assert proxy.drop_connections() == 0
        finally:
            c.loop_stop()


def test_a_killed_broker_is_gone_until_started_again_on_its_port() -> None:
    with Mosquitto() as b:
        b.kill()
        with pytest.raises(OSError):
            socket.create_connection((b.host, b.port), timeout=1).close()
        b.start()
        socket.create_connection((b.host, b.port), timeout=1).close()
