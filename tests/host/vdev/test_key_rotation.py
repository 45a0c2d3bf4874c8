"""Key rotation end to end on a running virtual door: mosquitto, the platform's ingest, the
door firmware under MicroPython, cards through the PN532 emulator. The new door key files
reach the door as signed, sealed `keys` commands (`doorctl platform command DEV keys`): some
cards are re-keyed at the desk, some at the door; both versions are granted during the
window; after it the old version and a clone made with the stolen door's old key are refused;
the door reports its key file generation; no key crosses the broker or is printed."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from crypto.keystore import SoftwareKeyStore
from host_tools.cards import sitekeys, vcard
from host_tools.cards.kit import SiteKit
from host_tools.cards.rekey import rekey
from host_tools.console import mpremote
from host_tools.pn532_emu import PN532Emulator
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice, selected_image
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import provision
from host_tools.vdev.swipe import swipe_local, wait_for
from offline_cache import fmt
from reference_platform.cards import CardRegistry
from reference_platform.commands import command_key
from reference_platform.ingest import Platform
from reference_platform.keyprogress import record_card
from reference_platform.store import Store
from wire import card_profile as profile
from wire import codes as ev
from wire.common import FLAG_REKEYED

DEVICE = "rot.b1.d1"
SITE = 5150
DOORCTL = str(Path(sys.executable).with_name("doorctl"))


def journal(dev: VirtualDevice, code: int) -> list[tuple[int, int, str]]:
    out = mpremote(dev.pty, "exec",
                   "from firmware.main import running\nj = running['journal']\n"
                   f"print([(r[6], r[2] & 15, r[7][:8].hex()) for r in j.read(1, 400) if r[1] == {code}])")
    return eval(out.strip().splitlines()[-1])  # noqa: S307 - our own device's printed list


class Sniffer:
    """Everything published on the broker, to show no key crosses it."""

    def __init__(self, host: str, port: int) -> None:
        self.payloads: list[bytes] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe("#", 0)
        self.client.on_message = lambda c, u, m: self.payloads.append(bytes(m.payload))
        self.client.connect(host, port)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def clone_with(door_keys: dict[str, Any], original: vcard.VirtualDesfire) -> vcard.VirtualDesfire:
    """What a thief with the stolen door's key file makes: the card's UID, its credential
    (read with the door read key) and that key itself, on key version 1."""
    thief = SoftwareKeyStore.from_dict(door_keys)
    clone = vcard.VirtualDesfire(uid=original.uid)
    app = dict(original.card.state["apps"][profile.DOOR_AID.hex()])
    key1 = thief.derive_card_key(original.uid, profile.DOOR_AID, "door_read")
    clone.card.state["apps"][profile.DOOR_AID.hex()] = {
        "key_settings": app["key_settings"], "keys": [bytes(16).hex(), key1.hex()],
        "key_versions": [1, 1], "files": {n: dict(f) for n, f in app["files"].items()}}
    return clone


@pytest.fixture()
def rig(tmp_path: Path) -> Iterator[dict[str, Any]]:
    kit = SiteKit(SITE)
    kit.keys["door_rekey"] = True
    kit.store = SoftwareKeyStore.from_dict(kit.keys)
    broker = Mosquitto().start()
    sniff = Sniffer(broker.host, broker.port)
    platform = Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port,
                        ack_key=command_key(kit.keys)).start()
    dev = VirtualDevice(tmp_path / "door", image=selected_image()).start()
    emu = PN532Emulator()
    link = io = None
    try:
        cards = {name: kit.issue() for name in ("desk", "door", "late")}
        stolen = sitekeys.device_keys(kit.keys, DEVICE)  # the file a thief takes from a door
        provision(dev.pty, config=kit.door_config(DEVICE, door={"unlock_ms": 800, "deny_ms": 300},
                                                  broker={"host": broker.host, "port": broker.port}),
                  keys=stolen,
                  cache=kit.snapshot(1, [(ref, fmt.ACTIVE, False) for _, ref in cards.values()]))
        dev.restart()
        link = emu.connect(dev.reader_addr)
        io = VirtualIO(dev.io_addr)
        wait_for(lambda: bool(io.status().get("clock_synced")), what="the platform's time")
        wait_for(lambda: str(io.status().get("reader", "")).startswith("pn532"), what="the reader")
        site_file = tmp_path / "site.json"
        sitekeys.write_secret(site_file, kit.keys)
        yield {"kit": kit, "dev": dev, "io": io, "emu": emu, "cards": cards, "stolen": stolen,
               "db": tmp_path / "p.db",
               "site_file": site_file, "broker": broker, "sniff": sniff, "platform": platform}
    finally:
        if io is not None:
            io.close()
        if link is not None:
            link.close()
        dev.stop()
        platform.stop()
        sniff.stop()
        broker.stop()


def _doorctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOORCTL, *args], capture_output=True, text=True, timeout=120)


def _push(r: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    b = r["broker"]
    out = _doorctl("platform", "command", DEVICE, "keys", "--keys", str(r["site_file"]),
                   "--broker", f"{b.host}:{b.port}", "--timeout", "30")
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def _generation(r: dict[str, Any]) -> int:
    out = mpremote(r["dev"].pty, "exec", "from firmware.main import running\n"
                                         "print(running['keystore'].generation)")
    return int(out.strip().splitlines()[-1])


def _progress(r: dict[str, Any]) -> tuple[dict[str, Any], str]:
    db = str(r["db"])
    js = _doorctl("platform", "keys", "--keys", str(r["site_file"]), "--db", db, "--json")
    text = _doorctl("platform", "keys", "--keys", str(r["site_file"]), "--db", db)
    assert js.returncode == 0 and text.returncode == 0, js.stderr + text.stderr
    return json.loads(js.stdout), text.stdout


def test_rotation_on_a_running_door(rig: dict[str, Any]) -> None:
    r = rig
    dev, io, emu, cards = r["dev"], r["io"], r["emu"], r["cards"]
    printed: list[str] = []
    reg = CardRegistry(r["platform"].store, r["kit"].keys)
    today = dt.date.today()
    for name, (_, ref) in cards.items():
        reg.issue(ref.hex(), name, "101", [0], today, today + dt.timedelta(days=30))
    for name in ("desk", "door", "late"):
        assert swipe_local(io, emu, cards[name][0]), (name, journal(dev, ev.ACCESS_DENIED))  # version 1

    # rotate: version 2, doors accept 1 and 2; the door gets its sealed key file over MQTT
    out = _doorctl("card", "keys", "rotate", "--keys", str(r["site_file"]))
    assert out.returncode == 0, out.stderr
    printed += [out.stdout, out.stderr, _push(r).stdout]
    site = json.loads(r["site_file"].read_text())
    assert _generation(r) == 2
    stale = r["site_file"].with_name("stale.json")
    sitekeys.write_secret(stale, site)
    desk_store = SoftwareKeyStore.from_dict(site)

    # the desk moves one card; the door moves another at its next swipe
    desk_card = cards["desk"][0]
    desk_card.card.reset()
    moved = rekey(desk_card.process, desk_store)
    assert moved.after == 2
    record_card(r["platform"].store, moved.ref.hex(), moved.after)  # what `card rekey --db` does
    assert swipe_local(io, emu, desk_card)
    door_card = cards["door"][0]
    assert swipe_local(io, emu, door_card)
    assert door_card.card.state["apps"][profile.DOOR_AID.hex()]["key_versions"][1] == 2
    granted = journal(dev, ev.ACCESS_GRANTED)
    assert granted[-1][2] == cards["door"][1].hex() and granted[-1][1] & FLAG_REKEYED
    assert not granted[-2][1] & FLAG_REKEYED  # the desk's card was already on version 2

    # rotation progress at the platform: the door on generation 2, two cards of three moved
    wait_for(lambda: _progress(r)[0]["cards"][cards["door"][1].hex()] == 2, what="the door's re-key event")
    p, text = _progress(r)
    assert p["doors"] == {DEVICE: 2} and p["generation"] == 2 and p["accept"] == [1, 2]
    assert p["cards"] == {cards["desk"][1].hex(): 2, cards["door"][1].hex(): 2, cards["late"][1].hex(): None}
    assert "doors: 1 of 1 on generation 2" in text and "cards: 2 of 3 on version 2; 1 not yet moved" in text
    printed += [text, json.dumps(p)]

    # close the window: version 1 is refused, the clone made with the stolen key with it
    out = _doorctl("card", "keys", "close", "--keys", str(r["site_file"]))
    assert out.returncode == 0, out.stderr
    printed += [out.stdout, out.stderr, _push(r).stdout]
    assert _generation(r) == 3
    # the generation-2 key file again (a replay, or an old copy): refused, the door keeps 3
    b = r["broker"]
    old = _doorctl("platform", "command", DEVICE, "keys", "--keys", str(stale),
                   "--broker", f"{b.host}:{b.port}", "--timeout", "30")
    assert old.returncode == 1 and "key_generation" in old.stdout + old.stderr
    printed += [old.stdout, old.stderr]
    assert _generation(r) == 3
    denied_before = len(journal(dev, ev.ACCESS_DENIED))
    late = cards["late"][0]
    assert not swipe_local(io, emu, late)
    assert not swipe_local(io, emu, clone_with(r["stolen"], cards["desk"][0]))
    denied = journal(dev, ev.ACCESS_DENIED)[denied_before:]
    assert [d[0] for d in denied] == [ev.deny_code("key_retired")] * 2
    assert swipe_local(io, emu, desk_card) and swipe_local(io, emu, door_card)

    # the late card is re-keyed at the desk after the window and opens again
    late.card.reset()
    assert rekey(late.process, SoftwareKeyStore.from_dict(json.loads(r["site_file"].read_text()))).after == 2
    assert swipe_local(io, emu, late)

    site = json.loads(r["site_file"].read_text())
    # the door reports its key file generation to the platform
    store = r["platform"].store
    wait_for(lambda: ((store.device(DEVICE) or {}).get("status") or {}).get("key_gen") == 3,
             what="the door's status with key_gen 3")

    secrets = [v for v in site["keys"].values()] + [sitekeys.device_keys(site, DEVICE)["keys"]["update"]]
    log = mpremote(dev.pty, "exec", "from firmware.log import lines\nprint(lines())")
    assert "key file generation 3" in log  # the door logs what it did, never a key
    printed.append(log)
    blob = b"\n".join(r["sniff"].payloads)
    assert b'"op": "keys"' in blob or b'"op":"keys"' in blob
    for s in secrets:
        assert s.encode() not in blob and s not in "".join(printed)
