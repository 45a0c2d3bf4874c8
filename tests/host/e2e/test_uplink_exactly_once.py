"""Every event reaches the platform exactly once, in order: real mosquitto, real MicroPython
device code (journal + uplink on the flash simulator), the real platform ingest on SQLite."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host_tools.mpy_build import build_device_tree
from host_tools.netfault import FaultProxy
from host_tools.paths import REPO_ROOT, micropython, micropython_env
from host_tools.services.mosquitto import Mosquitto
from reference_platform.ingest import STORE_ATTEMPTS, Platform
from reference_platform.store import Store

DEVICE = REPO_ROOT / "host_tools" / "benchmarks" / "device" / "uplink_device.py"
BLOCKS = 64
# Journal + uplink need about 72 KiB on the unix port, where the bytecode shares the heap
# (`doorctl bench uplink.heap_min_kib`); the margin depends on path lengths and the like, so
# these tests, which are about delivery, give it room: 96K failed at the uplink's boot buffers
# once the codec came from the wire package's modules (loaded from source here), 104K too.
HEAP = "128K"  # as the uplink benchmark (host_tools/benchmarks/uplink.py HEAP says why)


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


def start_device(image: Path, broker: Mosquitto | FaultProxy, count: int, boot: int = 1,
                 pace_ms: int = 0, device: str = "site.b1.d1") -> subprocess.Popen[str]:
    env = micropython_env(build_device_tree()[0].parents[1])
    return subprocess.Popen(
        [micropython(), "-X", f"heapsize={HEAP}", str(DEVICE), str(image), str(BLOCKS), broker.host,
         str(broker.port), device, str(boot), str(count), str(pace_ms)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=image.parent,
    )


def wait_until(cond, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    assert "DRAINED" in out, out
    return out


def assert_exactly_once(store: Store, n: int, device: str = "site.b1.d1") -> None:
    seqs = [e[0] for e in store.events(device)]
    assert seqs == list(range(1, n + 1))
    assert store.ack_upto(device) == n
    assert store.missing(device) == []


def test_offline_swipes_drain_when_the_broker_appears(tmp_path: Path) -> None:
    b = Mosquitto()
    dev = start_device(tmp_path / "flash.img", b, 300)
    time.sleep(1.0)  # the device runs offline, retrying with backoff
    with b, Platform(Store(str(tmp_path / "p.db")), b.host, b.port) as platform:
        finish(dev)
        assert_exactly_once(platform.store, 300)
        # It announced itself online: only that presence carries its boot counter. (Its last
        # will may already have marked it offline: the program ends without a DISCONNECT.)
        assert platform.store.device("site.b1.d1")["boot"] == 1  # type: ignore[index]


def test_broker_restart_mid_upload(tmp_path: Path, broker: Mosquitto) -> None:
    with Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port) as platform:
        dev = start_device(tmp_path / "flash.img", broker, 3000)
        wait_until(lambda: platform.store.count() > 300)
        broker.restart()
        finish(dev)
        assert_exactly_once(platform.store, 3000)


def test_platform_stopped_and_restarted_loses_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    db = str(tmp_path / "p.db")
    first = Platform(Store(db), broker.host, broker.port, client_id="platform-a").start()
    dev = start_device(tmp_path / "flash.img", broker, 2000)
    wait_until(lambda: first.store.count() > 200)
    first.stop()  # acknowledgements stop; the device resends from its first unacked event
    time.sleep(2.0)
    with Platform(Store(db), broker.host, broker.port, client_id="platform-a") as again:
        finish(dev)
        assert_exactly_once(again.store, 2000)


class FailingStore(Store):
    """A store whose first `failures` transactions of events fail to commit (a locked
    database, say); `failed` counts the batches they held."""

    def __init__(self, path: str, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.failed = 0

    def store_batches(self, batches: Any, presence: Any = (), gone: Any = None) -> dict[str, int]:
        if batches and self.failures > 0:
            self.failures -= 1
            self.failed += len(batches)
            raise sqlite3.OperationalError("database is locked")
        return super().store_batches(batches, presence, gone)


def test_a_failed_commit_at_the_platform_is_resent_by_the_door(tmp_path: Path,
                                                             broker: Mosquitto) -> None:
    # Every attempt at one group fails: its batches are not acknowledged, the door resends.
    store = FailingStore(str(tmp_path / "p.db"), failures=STORE_ATTEMPTS)
    with Platform(store, broker.host, broker.port) as platform:
        dev = start_device(tmp_path / "flash.img", broker, 500)
        finish(dev)
        assert store.failures == 0 and store.failed >= STORE_ATTEMPTS
        assert platform.store_failures * STORE_ATTEMPTS == store.failed
        assert platform.connected.is_set()  # still there, still storing
        assert_exactly_once(platform.store, 500)


def test_a_commit_that_fails_once_is_tried_again_at_once(tmp_path: Path, broker: Mosquitto) -> None:
    store = FailingStore(str(tmp_path / "p.db"), failures=1)
    with Platform(store, broker.host, broker.port) as platform:
        dev = start_device(tmp_path / "flash.img", broker, 500)
        finish(dev)
        assert store.failures == 0 and store.failed >= 1
        assert platform.store_failures == 0  # the second attempt stored the group
        assert_exactly_once(platform.store, 500)


def test_power_cut_during_upload_then_reboot(tmp_path: Path, broker: Mosquitto) -> None:
    image = tmp_path / "flash.img"
    with Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port) as platform:
        dev = start_device(image, broker, 2500)
        wait_until(lambda: platform.store.count() > 400)
        dev.kill()  # power cut: SIGKILL, the flash image keeps what was programmed
        dev.wait()
        assert platform.store.count() < 2500
        again = start_device(image, broker, 0, boot=2)
        finish(again)
        assert_exactly_once(platform.store, 2500)


def test_swipes_while_online_with_power_cut_mid_append(tmp_path: Path, broker: Mosquitto) -> None:
    image = tmp_path / "flash.img"
    with Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port) as platform:
        dev = start_device(image, broker, 100000, pace_ms=2)
        wait_until(lambda: platform.store.count() > 150)
        dev.kill()
        out, _ = dev.communicate()
        appended = [int(line.split()[1]) for line in out.splitlines() if line.startswith("APPENDED")]
        again = start_device(image, broker, 0, boot=2)
        finish(again)
        stored = [e[0] for e in platform.store.events("site.b1.d1")]
        # Everything the device confirmed as appended is on the platform, once, in order.
        assert stored[: len(appended)] == appended
        assert stored == list(range(1, len(stored) + 1))


def test_two_platform_instances_share_the_load_without_double_storing(
        tmp_path: Path, broker: Mosquitto) -> None:
    db = str(tmp_path / "p.db")
    with Platform(Store(db), broker.host, broker.port) as a, \
            Platform(Store(db), broker.host, broker.port) as b:
        wait_until(lambda: a.connected.is_set() and b.connected.is_set())
        devs = [start_device(tmp_path / f"f{i}.img", broker, 1500, device=f"site.b1.d{i}")
                for i in range(3)]
        for d in devs:
            finish(d)
        for i in range(3):
            assert_exactly_once(a.store, 1500, f"site.b1.d{i}")
        assert a.stored_batches > 0 and b.stored_batches > 0


def test_connection_cut_mid_publish_loses_and_duplicates_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    with Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port) as platform, \
            FaultProxy(broker.host, broker.port) as proxy:
        dev = start_device(tmp_path / "flash.img", proxy, 600, pace_ms=3)
        wait_until(lambda: platform.store.count() > 100)
        proxy.cut_next_publish_from_client("/events")  # half an events packet, then the line dies
        wait_until(lambda: proxy.cuts == 1)
        finish(dev)
        assert proxy.connections >= 2  # the device reconnected
        assert_exactly_once(platform.store, 600)


def test_lost_acknowledgements_make_the_device_resend_and_the_platform_store_once(
        tmp_path: Path, broker: Mosquitto) -> None:
    with Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port) as platform, \
            FaultProxy(broker.host, broker.port) as proxy:
        proxy.drop_to_client(lambda topic: topic.endswith("/ack"), count=10**6)
        dev = start_device(tmp_path / "flash.img", proxy, 400)
        # The device sends its window (8 batches of 16) and waits for acks that never come;
        # past its ack timeout (1.5 s) it sends them again; the platform stores them once.
        wait_until(lambda: platform.store.count() == 128)
        time.sleep(3.5)
        assert platform.store.count() == 128
        proxy.stop_dropping()
        out = finish(dev)
        assert proxy.dropped
        resends = int(out.split("resends")[1].split()[0])
        assert resends >= 1  # the device did not get its acks in time and sent again
        assert_exactly_once(platform.store, 400)


def test_a_stopped_anonymous_platform_takes_no_share_of_the_doors_batches(
        tmp_path: Path, broker: Mosquitto) -> None:
    for i in range(3):  # instances that came and went
        old = Platform(Store(str(tmp_path / f"old{i}.db")), broker.host, broker.port).start()
        assert old.connected.wait(10)
        time.sleep(0.3)  # its shared subscription is in place
        old.stop()
    with Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port) as platform:
        # Subscribed before the door's first batch: else that batch reaches nobody and is sent
        # again after the ack timeout, a resend this test would count against the dead sessions.
        assert platform.connected.wait(10)
        out = finish(start_device(tmp_path / "flash.img", broker, 400))
        assert int(out.split("resends")[1].split()[0]) == 0  # no batch went to a dead session
        assert_exactly_once(platform.store, 400)


def test_connections_cut_right_after_connack_do_not_grow_the_backoff(tmp_path: Path,
                                                                     broker: Mosquitto) -> None:
    # A flaky NAT drops four connections just after the broker accepted them. Each one reached
    # CONNACK, so the link works: the next attempt comes after the first backoff step (1 s,
    # jittered +-25%), not after 2, 4, 8 s.
    with Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port) as platform, \
            FaultProxy(broker.host, broker.port) as proxy:
        proxy.cut_after_connack(4)
        out = finish(start_device(tmp_path / "flash.img", proxy, 200))
        assert proxy.connack_cuts == 4 and proxy.connections == 5
        status = json.loads(out.split("STATUS", 1)[1].strip().splitlines()[0])
        assert status["uplink_dropped"] == 4
        assert status["uplink_retry_in_ms"] <= 1250  # the wait before the fifth attempt
        assert status["uplink_last_error"]  # why the last connection ended
        assert_exactly_once(platform.store, 200)
