"""Permissions reaching a door: a lost card from the platform's revocation to the door refusing
it, and a full 100,000-card snapshot to a door, through mosquitto on loopback to the virtual
device. Baseline in the same run: a remote command's round trip (the same broker, platform and
door, no file)."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from host_tools.cards.kit import SiteKit
from host_tools.pn532_emu import LocalCard, PN532Emulator
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import provision
from offline_cache import fmt
from reference_platform.commands import command_key
from reference_platform.distribute import push
from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire import common

DEVICE = "bench.b1.d1"
N = 10
SNAPSHOT_CARDS = 100_000
SMOKE = {"N": 2, "SNAPSHOT_CARDS": 500}
FIGURES = {
    "platform.lost_card_latency_s": f"lost card: revocation delta published to the door refusing the card "
                            f"(cache_state confirmed, then a swipe refused), median of {N}, s",
    "platform.lost_card_applied_s": f"of which: delta published to the door confirming the version, "
                                    f"median of {N}, s",
    "platform.command_rtt_s": f"baseline: a signed patrol command to its reply, median of {N}, s",
    "platform.snapshot_100k_s": "100,000-card snapshot from the platform to the door installed "
                                "(1 KiB pieces, verify, install), s",
    "platform.snapshot_100k_bytes": "bytes on the wire for it (MQTT payloads)",
}


def _wait(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the door did not react")
        time.sleep(0.002)


def run(names: set[str]) -> dict[str, float]:
    site = SiteKit()
    cards = [site.issue() for _ in range(N)]
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, Mosquitto() as broker, \
            Platform(Store(str(Path(tmp) / "p.db")), broker.host, broker.port,
                     ack_key=site.command_key) as platform, \
            VirtualDevice(Path(tmp) / "door") as dev:
        platform.cache_key = site.cache_key  # tags the whitelist pieces (the door checks them)
        provision(dev.pty, config=site.door_config(DEVICE, broker={"host": broker.host,
                                                                    "port": broker.port}),
                  keys=site.door_keys(),
                  cache=site.snapshot(1, [(ref, fmt.ACTIVE, False) for _, ref in cards]))
        platform.cache_key = site.cache_key
        dev.restart()
        _wait(lambda: platform.cache_states.get(DEVICE, {}).get("version") == 1)
        emu = PN532Emulator()
        with emu.connect(dev.reader_addr), VirtualIO(dev.io_addr) as io:
            _wait(lambda: bool(io.status().get("clock_synced")))
            key = command_key(site.keys)
            rtt = []
            for _ in range(N):
                t = time.perf_counter()
                cmd_id = platform.command(DEVICE, "patrol", {}, key)
                if platform.wait_reply(cmd_id, 10) is None:
                    raise TimeoutError("no reply")
                rtt.append(time.perf_counter() - t)
            total, applied = [], []
            for i, (card, ref) in enumerate(cards):
                version = 2 + i
                delta = site.delta(version, version - 1, [(ref, fmt.LOST, False)])
                _wait(lambda: io.state()["outputs"].get("led") == "off")
                t = time.perf_counter()
                push(platform, DEVICE, delta)
                applied.append(time.perf_counter() - t)
                mark = io.set_input("rex", False)
                emu.present(LocalCard(card.process, card.uid))
                def refused(m: int = mark) -> bool:
                    return any(e.value == "red" for e in io.outputs("led") if e.device_ms >= m)

                _wait(refused)
                total.append(time.perf_counter() - t)
                emu.remove()
                if any(e.value for e in io.outputs("relay") if e.device_ms >= mark):
                    raise RuntimeError("the lost card opened the door")
            out["platform.command_rtt_s"] = statistics.median(rtt)
            out["platform.lost_card_applied_s"] = statistics.median(applied)
            out["platform.lost_card_latency_s"] = statistics.median(total)
            big = [(i.to_bytes(8, "big"), fmt.ACTIVE, False) for i in range(1, SNAPSHOT_CARDS + 1)]
            snap = site.snapshot(100, big)
            t = time.perf_counter()
            push(platform, DEVICE, snap, timeout=300)
            out["platform.snapshot_100k_s"] = time.perf_counter() - t
            pieces = -(-len(snap) // common.CACHE_CHUNK)
            out["platform.snapshot_100k_bytes"] = float(len(snap) + pieces * common.CACHE_HDR)
    return out
