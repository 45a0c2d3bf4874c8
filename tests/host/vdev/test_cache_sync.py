"""Whitelist updates from the platform to a running virtual door over mosquitto: a lost card
is refused right after the delta lands; forged, replayed and out-of-base updates are refused
with an event and change nothing; a 100-card snapshot in several chunks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from host_tools.cards.kit import SiteKit
from host_tools.console import mpremote
from host_tools.pn532_emu import PN532Emulator
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import provision
from host_tools.vdev.swipe import swipe_local
from host_tools.vdev.swipe import wait_for as wait_until
from offline_cache import fmt
from reference_platform.distribute import DistributionError, attach, push
from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire import codes as ev
from wire import common
from wire.platform import decode_cache_state, encode_cache_chunk

DEVICE = "sync.b1.d1"


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.site = SiteKit()
        self.card, self.ref = self.site.issue()
        self.broker = Mosquitto().start()
        self.platform = Platform(Store(str(tmp / "p.db")), self.broker.host, self.broker.port,
                                 ack_key=self.site.command_key).start()
        self.platform.cache_key = self.site.cache_key
        self.dev = VirtualDevice(tmp / "door").start()
        provision(self.dev.pty, config=self.site.door_config(
            DEVICE, broker={"host": self.broker.host, "port": self.broker.port}),
            keys=self.site.door_keys(), cache=self.site.snapshot(1, [(self.ref, fmt.ACTIVE, False)]))
        self.dev.restart()
        wait_until(lambda: self.platform.cache_states.get(DEVICE, {}).get("version") == 1)
        self.emu = PN532Emulator()
        self.link = self.emu.connect(self.dev.reader_addr)
        self.io = VirtualIO(self.dev.io_addr)
        wait_until(lambda: bool(self.io.status().get("clock_synced")))

    def swipe(self) -> bool:
        """Present the card; True when the relay opened."""
        return swipe_local(self.io, self.emu, self.card)

    def codes(self, code: int) -> list[int]:
        return [e[6] for e in self.platform.store.events(DEVICE) if e[1] == code]

    def close(self) -> None:
        self.io.close()
        self.link.close()
        self.dev.stop()
        self.platform.stop()
        self.broker.stop()


@pytest.fixture()
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def test_a_lost_card_is_refused_as_soon_as_the_delta_lands(rig: Rig) -> None:
    assert rig.swipe() is True
    state = push(rig.platform, DEVICE, rig.site.delta(2, 1, [(rig.ref, fmt.LOST, False)]))
    assert state["version"] == 2
    assert rig.swipe() is False
    wait_until(lambda: rig.codes(ev.ACCESS_DENIED) == [ev.deny_code("lost")])
    wait_until(lambda: len(rig.codes(ev.CACHE_UPDATED)) == 1)
    # unblocked by the next delta
    push(rig.platform, DEVICE, rig.site.delta(3, 2, [(rig.ref, fmt.ACTIVE, False)]))
    assert rig.swipe() is True


def test_forged_replayed_and_out_of_base_updates_change_nothing(rig: Rig) -> None:
    revoke = rig.site.delta(2, 1, [(rig.ref, fmt.LOST, False)])
    forged = revoke[:-1] + bytes([revoke[-1] ^ 1])
    with pytest.raises(DistributionError) as e:
        push(rig.platform, DEVICE, forged)
    assert e.value.reason == "bad_tag"
    other_site = SiteKit(rig.site.site_id)  # same site id, another signing key
    with pytest.raises(DistributionError) as e:
        push(rig.platform, DEVICE, other_site.delta(2, 1, [(rig.ref, fmt.LOST, False)]))
    assert e.value.reason == "bad_tag"
    with pytest.raises(DistributionError) as e:
        push(rig.platform, DEVICE, rig.site.delta(5, 4, [(rig.ref, fmt.LOST, False)]))
    assert e.value.reason == "base_mismatch"  # the platform must send a snapshot
    with pytest.raises(DistributionError) as e:
        push(rig.platform, DEVICE, rig.site.snapshot(1, []))
    assert e.value.reason == "stale_version"  # a replayed old snapshot
    assert rig.swipe() is True  # still version 1, the card still opens
    wait_until(lambda: rig.codes(ev.CACHE_REJECTED) == [1, 1, 3, 2])


def test_a_snapshot_in_many_chunks_replaces_the_whitelist(rig: Rig) -> None:
    others = [(b"\xee" * 4 + i.to_bytes(4, "big"), fmt.ACTIVE, False) for i in range(1200)]
    snap = rig.site.snapshot(9, others + [(rig.ref, fmt.SUSPENDED, False)])
    assert len(snap) > 8 * common.CACHE_CHUNK
    assert push(rig.platform, DEVICE, snap)["version"] == 9
    assert rig.swipe() is False
    wait_until(lambda: rig.codes(ev.ACCESS_DENIED) == [ev.deny_code("suspended")])


def test_garbage_on_the_update_topic_is_refused(rig: Rig) -> None:
    # Anyone on the broker can send it: counted in the door's status, not journaled each time.
    for _ in range(20):
        rig.platform.publish(DEVICE, "cache", b"not an update")
    wait_until(lambda: rig.io.status().get("refused", {}).get("bad_chunk") == 20)
    assert rig.swipe() is True
    assert rig.codes(ev.CACHE_REJECTED) == []


def _incoming(rig: Rig) -> str:
    return mpremote(rig.dev.pty, "exec", "import os\ntry:\n print(os.stat('cache/incoming.bin')[6])\n"
                                         "except OSError:\n print('none')").strip().splitlines()[-1]


def _state_after(rig: Rig, publish: Any) -> dict[str, Any]:
    rig.platform.cache_states.pop(DEVICE, None)
    publish()
    state = rig.platform.wait_cache_state(DEVICE, lambda s: True, 20)
    assert state is not None
    return state


def test_the_signed_header_is_checked_before_a_byte_is_written(rig: Rig) -> None:
    key = rig.site.cache_key
    # A snapshot claiming 279,000 cards (4 MB): more than the door's free flash.
    snap = bytearray(rig.site.snapshot(2, []))
    n = 279000
    snap[24:28] = n.to_bytes(4, "big")
    total = 36 + 15 * n + 32
    first = encode_cache_chunk(2, total, 0, bytes(snap[:36]) + bytes(common.CACHE_CHUNK - 36), key)
    state = _state_after(rig, lambda: rig.platform.publish(DEVICE, "cache", first))
    assert state["reason"] == "no_room" and state["have"] == 0
    assert _incoming(rig) == "none"
    # Another site's file: refused from its first piece, not after the whole of it.
    other = SiteKit(rig.site.site_id + 1).snapshot(2, [])
    piece = encode_cache_chunk(2, len(other), 0, other[:common.CACHE_CHUNK], key)
    state = _state_after(rig, lambda: rig.platform.publish(DEVICE, "cache", piece))
    assert state["reason"] == "wrong_site" and _incoming(rig) == "none"
    assert rig.swipe() is True  # still version 1


def test_a_transfer_stops_at_the_first_piece_that_is_not_the_platforms(rig: Rig) -> None:
    others = [(b"\xee" * 4 + i.to_bytes(4, "big"), fmt.ACTIVE, False) for i in range(1200)]
    snap = rig.site.snapshot(9, others + [(rig.ref, fmt.SUSPENDED, False)])
    key, c = rig.site.cache_key, common.CACHE_CHUNK

    def pieces() -> None:
        for i, k in ((0, key), (1, key), (2, b"\x00" * 32), (3, key)):
            rig.platform.publish(DEVICE, "cache", encode_cache_chunk(
                9, len(snap), i * c, snap[i * c:(i + 1) * c], k))

    state = _state_after(rig, pieces)
    assert state["reason"] == "bad_chunk" and state["receiving"] == 0 and state["version"] == 1
    time.sleep(0.5)  # the fourth piece, well signed, does not continue what was stopped
    assert rig.platform.cache_states[DEVICE]["version"] == 1
    with VirtualIO(rig.dev.io_addr) as io:
        assert io.status()["refused"].get("bad_mac") == 1
    assert push(rig.platform, DEVICE, snap)["version"] == 9  # the platform starts it again


class StateWatch:
    """Every whitelist state the door publishes while it runs (retained copies left out)."""

    def __init__(self, rig: Rig) -> None:
        self.states: list[dict[str, Any]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="state-watch")
        self.client.on_message = lambda _c, _u, msg: None if msg.retain else self.states.append(
            decode_cache_state(msg.payload))
        subscribed: list[bool] = []
        self.client.on_subscribe = lambda *_: subscribed.append(True)
        self.client.connect(rig.broker.host, rig.broker.port)
        self.client.loop_start()
        self.client.subscribe(common.topic(DEVICE, "cache_state"), 1)
        wait_until(lambda: bool(subscribed))

    def until_version(self, version: int) -> list[dict[str, Any]]:
        """The states up to the first one holding `version` (the broker keeps their order)."""
        wait_until(lambda: any(s["version"] == version for s in self.states), timeout=60)
        return self.states[:next(i for i, s in enumerate(self.states) if s["version"] == version) + 1]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _big_snapshot(rig: Rig) -> bytes:
    others = [(b"\xee" * 4 + i.to_bytes(4, "big"), fmt.ACTIVE, False) for i in range(1200)]
    return rig.site.snapshot(9, others + [(rig.ref, fmt.SUSPENDED, False)])


def _send(rig: Rig, snap: bytes, pieces: Any, forged: int = -1) -> None:
    c = common.CACHE_CHUNK
    for i in pieces:
        key = b"\x00" * 32 if i == forged else rig.site.cache_key
        rig.platform.publish(DEVICE, "cache", encode_cache_chunk(
            9, len(snap), i * c, snap[i * c:(i + 1) * c], key))


def test_a_refused_piece_is_answered_once_not_once_per_later_piece(rig: Rig) -> None:
    # The door answers from its MQTT reader, past the in-flight limit: one state per later
    # piece of the burst would be a flood the size of the file.
    snap = _big_snapshot(rig)
    n = -(-len(snap) // common.CACHE_CHUNK)
    assert n >= 9
    watch = StateWatch(rig)
    try:
        _send(rig, snap, range(n), forged=2)
        _send(rig, snap, range(n))  # the platform starts again: answered with the install
        states = watch.until_version(9)
    finally:
        watch.close()
    assert [(s["version"], s.get("reason")) for s in states] == [(1, "bad_chunk"), (9, None)]
    assert rig.io.status()["refused"].get("out_of_order") == n - 3
    assert rig.swipe() is False  # v9 suspends the card


def test_a_missing_piece_is_answered_once_a_burst_and_the_transfer_resumes(rig: Rig) -> None:
    snap = _big_snapshot(rig)
    c, n = common.CACHE_CHUNK, -(-len(snap) // common.CACHE_CHUNK)
    watch = StateWatch(rig)
    try:
        _send(rig, snap, [i for i in range(n) if i != 2])  # piece 2 lost on the way
        _send(rig, snap, range(3, n))  # the resume's first piece lost too: answered again
        _send(rig, snap, range(2, n))  # resumed from `have`
        states = watch.until_version(9)
    finally:
        watch.close()
    assert [(s["version"], s["receiving"], s["have"]) for s in states] == [
        (1, 9, 2 * c), (1, 9, 2 * c), (9, 0, 0)]
    assert rig.io.status()["refused"].get("out_of_order") == 2 * (n - 4)


def test_a_door_holding_the_platforms_version_with_other_cards_gets_the_platforms(rig: Rig) -> None:
    # The door holds "v1" from an installer's file; the platform's v1 has other cards. The
    # versions agree, the content hashes do not: the platform sends a new version with its
    # cards, and then the door reports the very hash the platform computes.
    import datetime as dt

    from offline_cache import content
    from reference_platform.cards import CardRegistry
    from reference_platform.distribute import differs

    installed = rig.site.snapshot(1, [(rig.ref, fmt.ACTIVE, False)])
    state = rig.platform.cache_states[DEVICE]
    assert state["version"] == 1 and state["hash"] == content.of_snapshot(installed)
    assert rig.io.status()["patrol"]["cache_hash"] == state["hash"]
    reg = CardRegistry(rig.platform.store, rig.site.keys)
    day = dt.date.today()
    assert reg.issue("00112233445566ff", resident="r-1", room="1", doors=[0],
                     valid_from=day - dt.timedelta(days=1), valid_to=day + dt.timedelta(days=30)) == 1
    assert differs(state, reg) and state["hash"] != reg.content_hash()
    attach(rig.platform, reg)  # as `platform run --keys` has it: the next state is compared
    rig.dev.restart()  # the door announces its whitelist state again on connecting
    wait_until(lambda: rig.platform.cache_states.get(DEVICE, {}).get("version") == 2, timeout=60)
    state = rig.platform.cache_states[DEVICE]
    assert reg.version() == 2 and state["hash"] == reg.content_hash()
    assert not differs(state, reg)
    rig.io.close()  # the restarted door's reader link and I/O channel
    rig.link.close()
    rig.link = rig.emu.connect(rig.dev.reader_addr)
    rig.io = VirtualIO(rig.dev.io_addr)
    assert rig.io.status()["cache_hash"] == reg.content_hash()
    assert rig.swipe() is False  # the installer's card is not the platform's
