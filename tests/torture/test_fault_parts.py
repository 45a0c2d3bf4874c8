"""The torture run's fault switches on real parts: the proxy drops every connection at once,
mosquitto dies by SIGKILL and comes back on its port, a virtual door boots armed to lose power
at a journal write."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from board.virtual import CUT_FILE
from host_tools.netfault import FaultProxy
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO


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


def test_a_virtual_door_armed_with_a_cut_file_loses_power_at_that_journal_write(
        tmp_path: Path) -> None:
    with VirtualDevice(tmp_path / "door") as dev:
        with VirtualIO(dev.io_addr) as io:
            assert io.status()["journal_depth"] == 1  # its first boot
        (dev.state_dir / CUT_FILE).write_text("1")
        dev.restart()
        with VirtualIO(dev.io_addr) as io:
            status = io.status()
        assert "PowerCut" in status["safe_mode"] and not status["ready"]
        assert not (dev.state_dir / CUT_FILE).exists()  # one shot: the next boot is whole
        dev.restart()
        with VirtualIO(dev.io_addr) as io:
            status = io.status()
        assert status["ready"] and "safe_mode" not in status
        assert status["journal_depth"] >= 2  # boot 1 and 3 at least; the torn record is not one
