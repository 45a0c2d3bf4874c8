"""The installer's commands against a virtual door through its pty with the real mpremote:
commission (every value checked first, nothing written on a bad one), self-test with its
report, the device log, live monitoring from the platform's MQTT, and flash up to esptool."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.cards.kit import SiteKit
from host_tools.console import call, mpremote
from host_tools.pn532_emu import PN532Emulator
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from offline_cache import fmt
from reference_platform.ingest import Platform
from reference_platform.store import Store

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
DEVICE = "inst.b1.d2"


def doorctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOORCTL, *args], capture_output=True, text=True, timeout=timeout)


class Site:
    def __init__(self, tmp: Path) -> None:
        self.kit = SiteKit(2024)
        self.keys = tmp / "site.json"
        self.keys.write_text(json.dumps(self.kit.keys))
        self.card, self.ref = self.kit.issue()
        self.cache = tmp / "whitelist.bin"
        self.cache.write_bytes(self.kit.snapshot(1, [(self.ref, fmt.ACTIVE, False)]))
        self.broker = Mosquitto().start()
        # The platform signs its acknowledgements with the site's command key: the door frees
        # nothing on an unsigned one.
        self.platform = Platform(Store(str(tmp / "p.db")), self.broker.host, self.broker.port,
                                 ack_key=bytes.fromhex(self.kit.keys["keys"]["command"])).start()
        self.dev = VirtualDevice(tmp / "door").start()

    def commission(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return doorctl("commission", "-p", self.dev.pty, "--keys", str(self.keys), "--device-id",
                       DEVICE, "--door-no", "2", "--broker",
                       f"{self.broker.host}:{self.broker.port}", *extra)

    def close(self) -> None:
        self.dev.stop()
        self.platform.stop()
        self.broker.stop()


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.close()


def test_bad_values_are_named_and_nothing_is_written(site: Site, tmp_path: Path) -> None:
    other = tmp_path / "other.bin"
    other.write_bytes(SiteKit(2024).snapshot(1, []))  # same site id, another site's key
    cases = [
        (("--device-id", "bad id!"), "--device-id 'bad id!'"),
        (("--door-no", "16"), "--door-no 16: must be 0-15"),
        (("--broker", "nohost"), "--broker 'nohost': must be HOST:PORT"),
        (("--lock", "magnetic"), "--lock 'magnetic'"),
        (("--unlock-ms", "10"), "--unlock-ms 10: must be 500-60000"),
        (("--cache", str(other)), "not signed with this site's cache key"),
        (("--wifi-ssid", "net"), "give both or neither"),
    ]
    for args, message in cases:
        r = doorctl("commission", "-p", site.dev.pty, "--keys", str(site.keys), "--device-id",
                    DEVICE, "--door-no", "2", "--broker", "127.0.0.1:1883", *args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
    assert "config.json" not in mpremote(site.dev.pty, "exec", "import os\nprint(os.listdir())")
    r = doorctl("commission", "-p", "/dev/ttyUSB7", "--keys", str(site.keys), "--device-id",
                DEVICE, "--door-no", "2", "--broker", "127.0.0.1:1883")
    assert r.returncode == 3 and "does not exist" in r.stderr


def test_commission_then_selftest_logs_and_monitor(site: Site, tmp_path: Path) -> None:
    pw = tmp_path / "pw.txt"
    pw.write_text("s3cret-broker-pw\n")
    r = site.commission("--cache", str(site.cache), "--unlock-ms", "3000", "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["config"]["door_no"] == 2 and shown["config"]["door"]["unlock_ms"] == 3000
    assert shown["keys"] == ["cache", "card_ref", "command", "door_read", "update"]
    assert site.kit.keys["keys"]["door_read"] not in r.stdout + r.stderr  # keys never echoed
    site.dev.restart()
    emu = PN532Emulator()
    with emu.connect(site.dev.reader_addr), VirtualIO(site.dev.io_addr) as io:
        deadline = time.monotonic() + 20
        while not (io.status().get("clock_synced") and str(io.status().get("reader")).startswith("pn532")):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        io_addr = f"io:{site.dev.io_addr[0]}:{site.dev.io_addr[1]}"
        # --wait: the platform item waits until the door's first events are acknowledged
        r = doorctl("selftest", "-p", site.dev.pty, "--relay", io_addr, "--report-dir",
                    str(tmp_path / "reports"), "--json", "--wait", "60")
        report = json.loads(r.stdout)
        results = {i["item"]: i["result"] for i in report["items"]}
        assert results == {"firmware": "pass", "deployed files": "skip", "clock": "pass",
                           "flash space": "pass", "key store": "pass", "door setup": "pass",
                           "door contact": "pass",
                           "REX": "pass", "tamper": "pass", "card reader": "pass", "broker": "pass",
                           "platform": "pass", "whitelist": "pass", "lock relay": "pass"}, report
        assert r.returncode == 0 and report["passed"] is True
        text = (tmp_path / "reports" / f"commissioning-{DEVICE}.txt").read_text()
        assert "PASSED" in text and "lock relay" in text
        # a stale I/O address (the virtual door restarted elsewhere): the relay item fails, the
        # report of every other item is still printed and saved
        r = doorctl("selftest", "-p", site.dev.pty, "--relay", "io:127.0.0.1:1", "--report-dir",
                    str(tmp_path / "stale"), "--json")
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        stale = {i["item"]: i for i in json.loads(r.stdout)["items"]}
        assert stale["lock relay"]["result"] == "fail" and "no I/O channel" in stale["lock relay"]["detail"]
        assert stale["firmware"]["result"] == "pass"
        assert (tmp_path / "stale" / f"commissioning-{DEVICE}.json").exists()
        # a fault the installer must see: the tamper switch open
        io.set_input("tamper", True)
        time.sleep(0.3)
        r = doorctl("selftest", "-p", site.dev.pty, "--relay", "skip", "--report-dir",
                    str(tmp_path / "reports"))
        assert r.returncode == 1 and "tamper switch open" in r.stdout
        io.set_input("tamper", False)
        mon = subprocess.Popen([DOORCTL, "monitor", "--door", DEVICE, "--broker",
                                f"{site.broker.host}:{site.broker.port}", "--seconds", "4",
                                "--json"], stdout=subprocess.PIPE, text=True)
        assert mon.stdout is not None
        first = mon.stdout.readline()  # subscribed: the door's retained messages arrive
        io.set_input("door_contact", "open")
        out, _ = mon.communicate(timeout=30)
    recs = [json.loads(x) for x in (first + out).splitlines()]
    names = [e["event"] for rec in recs if rec["kind"] == "events" for e in rec["events"]]
    assert "forced_open" in names
    assert any(rec["kind"] == "presence" and rec["online"] for rec in recs)  # retained
    logs = doorctl("logs", "-p", site.dev.pty)
    assert logs.returncode == 0 and "uplink: connected" in logs.stdout
    # wall-clock times from the door's clock (set by the platform), not uptime milliseconds
    stamp = logs.stdout.splitlines()[-1][:19]
    assert abs(time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) - time.time()) < 600, logs.stdout
    records = [json.loads(x) for x in doorctl("logs", "-p", site.dev.pty, "--json").stdout.splitlines()]
    assert records and all(r["clock"] == "door" and r["text"] for r in records)
    # --follow prints the log, then keeps watching until Ctrl-C, which ends it cleanly
    follow = subprocess.Popen([DOORCTL, "logs", "-p", site.dev.pty, "--follow"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert follow.stdout is not None
    assert "firmware" in follow.stdout.readline()
    time.sleep(2.5)  # at least one more poll of the door
    follow.send_signal(signal.SIGINT)
    _, err = follow.communicate(timeout=30)
    assert follow.returncode in (0, 130) and "Traceback" not in err, err


def test_flash_stops_with_a_clear_message_before_touching_a_board(tmp_path: Path) -> None:
    image = tmp_path / "micropython.bin"
    image.write_bytes(b"\xe9" + bytes(100))
    r = doorctl("flash", "-p", "/dev/ttyUSB9", "--firmware", str(image))
    assert r.returncode == 3 and "port /dev/ttyUSB9 does not exist" in r.stderr
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    r = doorctl("flash", "-p", "/dev/ttyUSB9", "--firmware", str(junk))
    assert r.returncode == 2 and "not an ESP32 firmware image" in r.stderr
    r = doorctl("flash", "-p", "/dev/ttyUSB9", "--firmware", str(tmp_path / "missing.bin"))
    assert r.returncode == 2 and "cannot be read" in r.stderr
    # a port that exists but has no ESP32 behind it: esptool is run and its failure explained
    import os

    master, slave = os.openpty()
    try:
        r = doorctl("flash", "-p", os.ttyname(slave), "--firmware", str(image), "--baud", "115200",
                    timeout=120)
        assert r.returncode == 3 and "esptool could not write" in r.stderr
    finally:
        os.close(master)
        os.close(slave)


def test_a_power_cut_during_commissioning_leaves_a_usable_door(site: Site, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(site.kit.snapshot(1, [(i.to_bytes(8, "big"), fmt.ACTIVE, False)
                                          for i in range(1, 3000)]))
    proc = subprocess.Popen([DOORCTL, "commission", "-p", site.dev.pty, "--keys", str(site.keys),
                             "--device-id", DEVICE, "--door-no", "2", "--broker", "127.0.0.1:1",
                             "--cache", str(big)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(3.0)  # in the middle of writing the whitelist
    site.dev.kill()
    proc.wait(120)  # the tool gives up on a door that stopped answering
    site.dev.restart()
    # the door runs: its console answers as soon as it boots, the firmware a moment later
    deadline = time.monotonic() + 60
    while not call(site.dev.pty, "status")["ready"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert call(site.dev.pty, "status")["ready"] is True
    check = ("import json, os\n"
             "for n in ('config.json', 'keys.json'):\n"
             "    try:\n        d = json.loads(open(n).read()); print(n, 'ok', sorted(d)[:2])\n"
             "    except OSError:\n        print(n, 'absent')\n")
    out = mpremote(site.dev.pty, "exec", check)
    for name in ("config.json", "keys.json"):
        assert f"{name} ok" in out or f"{name} absent" in out, out  # whole or not there
    again = site.commission("--cache", str(site.cache))  # the installer runs it again
    assert again.returncode == 0, again.stderr


def test_selftest_names_an_unreachable_broker(site: Site, tmp_path: Path) -> None:
    r = doorctl("commission", "-p", site.dev.pty, "--keys", str(site.keys), "--device-id", DEVICE,
                "--door-no", "2", "--broker", "127.0.0.1:1", "--cache", str(site.cache))
    assert r.returncode == 0
    site.dev.restart()
    time.sleep(1.0)
    r = doorctl("selftest", "-p", site.dev.pty, "--relay", "skip", "--report-dir", str(tmp_path),
                "--json")
    items = {i["item"]: i for i in json.loads(r.stdout)["items"]}
    assert r.returncode == 1 and items["broker"]["result"] == "fail"
    assert "check the broker address" in items["broker"]["detail"]


def test_commissioning_a_snapshot_resets_the_whitelist_version_floor(site: Site) -> None:
    # A door that held version 99 is commissioned anew with version 1 (a new site registry,
    # say): the floor goes with the old cache, so updates from version 2 on are taken.
    mpremote(site.dev.pty, "exec", "import os\ntry:\n os.mkdir('cache')\nexcept OSError:\n pass\n"
                                   "f = open('cache/floor', 'w'); f.write('99'); f.close()")
    r = site.commission("--cache", str(site.cache))
    assert r.returncode == 0, r.stdout + r.stderr
    site.dev.restart()  # the commissioning takes effect as the door boots
    listing = mpremote(site.dev.pty, "exec", "import os; print(sorted(os.listdir('cache')))")
    assert "'main.bin'" in listing and "floor" not in listing
