"""Hypothesis against a running virtual door: malformed, oversized and mistyped payloads on
every inbound topic, through the real broker. The door keeps running, counts and logs each
refusal, and every event it journals meanwhile still reaches the platform exactly once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from host_tools.console import mpremote
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import provision
from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire import common
from wire.door import decode_ack, decode_command, decode_time

DEVICE = "fuzz.b1.d1"
LEAVES = ["ack", "time", "cmd", "events", "status", "nonsense", "ack/extra"]
DECODERS = {"ack": decode_ack, "time": decode_time, "cmd": decode_command}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)
payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["v", "upto", "t", "id", "op", "args", "exp", "mac", "boot"]),
                    json_values, max_size=6).map(lambda d: json.dumps(d).encode()),
    st.integers(16 * 1024, 64 * 1024).map(lambda n: b'{"v": 1, "upto": ' + b"9" * n + b"}"),
)


def well_formed(leaf: str, payload: bytes) -> bool:
    """A payload the codec accepts is not garbage (a forged but valid ack is the broker ACL's
    business, docs/protocol.md): the fuzz keeps to refused ones."""
    decode = DECODERS.get(leaf)
    if decode is None:
        return False
    try:
        decode(payload)
    except common.ProtocolError:
        return False
    return True


def wait_until(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.broker = Mosquitto().start()
        self.platform = Platform(Store(str(tmp / "p.db")), self.broker.host, self.broker.port).start()
        self.dev = VirtualDevice(tmp / "dev").start()
        provision(self.dev.pty, config={"device_id": DEVICE, "broker": {
            "host": self.broker.host, "port": self.broker.port, "keepalive": 10}})
        self.dev.restart()
        wait_until(lambda: (self.platform.store.device(DEVICE) or {}).get("online") is True)
        self.pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fuzzer")
        self.pub.connect(self.broker.host, self.broker.port)
        self.pub.loop_start()
        self.sent = 0

    def close(self) -> None:
        self.pub.loop_stop()
        self.pub.disconnect()
        self.dev.stop()
        self.platform.stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    r = Rig(tmp_path_factory.mktemp("fuzz"))
    yield r
    r.close()


def _uplink_counters(dev: VirtualDevice) -> tuple[int, str]:
    out = mpremote(dev.pty, "exec", "from firmware.main import running\n"
                                    "u = running['uplink']\nprint(u.rejected, u.last_reject)")
    n, _, reason = out.strip().splitlines()[-1].partition(" ")
    return int(n), reason


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(leaf=st.sampled_from(LEAVES), payload=payloads)
def test_garbage_on_any_inbound_topic_is_refused_and_changes_nothing(rig: Rig, leaf: str,
                                                                      payload: bytes) -> None:
    assume(not well_formed(leaf, payload))
    info = rig.pub.publish(f"door/v1/{DEVICE}/{leaf}", payload, qos=1)
    info.wait_for_publish(5)
    rig.sent += 1


def test_after_the_fuzz_the_door_runs_and_loses_nothing(rig: Rig) -> None:
    assert rig.sent > 50
    store = rig.platform.store
    time.sleep(1.0)  # the last garbage reaches the device
    assert rig.dev.alive()
    rejected, reason = _uplink_counters(rig.dev)
    assert rejected > 0 and reason  # refusals counted, with the last reason kept for the log
    with VirtualIO(rig.dev.io_addr) as io:
        assert io.status()["ready"] is True
    before = store.count(DEVICE)
    mpremote(rig.dev.pty, "exec", "from firmware.main import running\nr = running['recorder']\n"
                                  "for i in range(30): r.record(2, 1, b'fz%02d' % i)")
    wait_until(lambda: store.count(DEVICE) >= before + 30)
    events = store.events(DEVICE)
    assert [e[0] for e in events] == list(range(1, len(events) + 1))  # every seq once, in order
    assert not store.missing(DEVICE)
    assert (store.device(DEVICE) or {}).get("online") is True
