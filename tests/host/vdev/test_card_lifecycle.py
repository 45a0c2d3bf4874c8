"""Card lifecycle at the platform reaching a real (virtual) door through mosquitto: issue, lost,
unblock, suspend/resume, renew, reissue, cancel; every operation is a signed whitelist version
the door confirms; a door that missed updates catches up; the residence report counts days."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.cards.kit import SiteKit
from host_tools.pn532_emu import PN532Emulator
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import provision
from host_tools.vdev.swipe import swipe_local
from host_tools.vdev.swipe import wait_for as wait_until
from reference_platform.cards import CardError, CardRegistry, residence_report
from reference_platform.commands import command_key
from reference_platform.distribute import attach, sync
from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire.common import SITE_TZ_MIN

DEVICE = "life.b1.d0"
TODAY = dt.date.today()
YEAR = dt.timedelta(days=365)


class Rig:
    def __init__(self, tmp: Path, db_url: str) -> None:
        self.site = SiteKit()
        self.broker = Mosquitto().start()
        self.store = Store(db_url)
        self.platform = Platform(self.store, self.broker.host, self.broker.port,
                                 ack_key=command_key(self.site.keys)).start()
        self.reg = CardRegistry(self.store, self.site.keys)
        self.dev = VirtualDevice(tmp / "door").start()
        provision(self.dev.pty, config=self.site.door_config(
            DEVICE, door_no=0, broker={"host": self.broker.host, "port": self.broker.port}),
            keys=self.site.door_keys())
        self.dev.restart()
        wait_until(lambda: DEVICE in self.platform.cache_states)
        self.emu = PN532Emulator()
        self.link = self.emu.connect(self.dev.reader_addr)
        self.io = VirtualIO(self.dev.io_addr)
        wait_until(lambda: bool(self.io.status().get("clock_synced")))

    def swipe(self, card) -> bool:  # type: ignore[no-untyped-def]
        return swipe_local(self.io, self.emu, card)

    def sync(self) -> None:
        assert sync(self.platform, self.reg) == {DEVICE: f"updated to {self.reg.version()}"}

    def close(self) -> None:
        self.io.close()
        self.link.close()
        self.dev.stop()
        self.platform.stop()
        self.broker.stop()


@pytest.fixture()
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """On SQLite; the tests marked BOTH_DATABASES run on PostgreSQL too (the rest exercise the
    door, not the database, and each run costs a virtual door)."""
    url = str(tmp_path / "p.db")
    if getattr(request, "param", "sqlite") == "postgresql":
        import uuid

        url = request.getfixturevalue("postgres_server").create_database(f"t{uuid.uuid4().hex[:12]}")
    r = Rig(tmp_path, url)
    yield r
    r.close()


BOTH_DATABASES = pytest.mark.parametrize("rig", ["sqlite", "postgresql"], indirect=True)


@BOTH_DATABASES
def test_every_lifecycle_operation_reaches_the_door(rig: Rig) -> None:
    card, ref = rig.site.issue()
    assert rig.swipe(card) is False  # the door has no whitelist yet: no_cache
    rig.reg.issue(ref.hex(), "r-301-1", "301", [0], TODAY - YEAR, TODAY + YEAR, name="Resident A")
    rig.sync()  # first time: a snapshot
    assert rig.swipe(card) is True
    rig.reg.report_lost(ref.hex())  # how fast: the benchmark (scale.lost_card_*), not a test
    rig.sync()
    assert rig.swipe(card) is False
    rig.reg.unblock(ref.hex())
    rig.sync()
    assert rig.swipe(card) is True
    rig.reg.suspend(ref.hex())
    rig.sync()
    assert rig.swipe(card) is False
    rig.reg.resume(ref.hex())
    rig.sync()
    assert rig.swipe(card) is True
    new_card, new_ref = rig.site.issue()
    rig.reg.reissue(ref.hex(), new_ref.hex())
    rig.sync()
    assert rig.swipe(card) is False and rig.swipe(new_card) is True
    assert rig.reg.card(ref.hex())["replaced_by"] == new_ref.hex()  # type: ignore[index]
    assert sync(rig.platform, rig.reg) == {DEVICE: "current"}
    # residence evidence from the stored events: today counted once, whatever the swipes
    wait_until(lambda: rig.store.count(DEVICE) > 10)
    time.sleep(1)
    site_today = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=SITE_TZ_MIN)).date()
    report = residence_report(rig.store, ref.hex(), site_today.replace(day=1), site_today)
    assert report == {site_today.strftime("%Y-%m"): 1}
    assert residence_report(rig.store, new_ref.hex(), site_today, site_today) == \
        {site_today.strftime("%Y-%m"): 1}


def test_a_door_that_missed_updates_catches_up_in_one_delta(rig: Rig) -> None:
    cards = [rig.site.issue() for _ in range(3)]
    rig.reg.issue(cards[0][1].hex(), "r-1", "101", [0], TODAY - YEAR, TODAY + YEAR)
    rig.sync()
    for _, ref in cards[1:]:
        rig.reg.issue(ref.hex(), "r-2", "102", [0], TODAY - YEAR, TODAY + YEAR)
    rig.reg.cancel(cards[0][1].hex())
    data = rig.reg.update_for(1)
    assert data is not None and len(data) < len(rig.reg.snapshot()) + 100
    rig.sync()
    assert [rig.swipe(c) for c, _ in cards] == [False, True, True]


def test_operations_that_do_not_apply_are_refused(rig: Rig) -> None:
    _, ref = rig.site.issue()
    with pytest.raises(CardError, match="not issued"):
        rig.reg.report_lost(ref.hex())
    rig.reg.issue(ref.hex(), "r-1", "101", [0, 3], TODAY, TODAY + YEAR)
    with pytest.raises(CardError, match="already issued"):
        rig.reg.issue(ref.hex(), "r-1", "101", [0], TODAY, TODAY + YEAR)
    with pytest.raises(CardError, match="is active: cannot unblock"):
        rig.reg.unblock(ref.hex())
    with pytest.raises(CardError, match="must extend"):
        rig.reg.renew(ref.hex(), TODAY)
    with pytest.raises(CardError, match="16 hex digits"):
        rig.reg.issue("xyz", "r-1", "101", [0], TODAY, TODAY + YEAR)
    with pytest.raises(CardError, match="door numbers 0-15"):
        rig.reg.issue("00" * 8, "r-1", "101", [16], TODAY, TODAY + YEAR)
    assert rig.reg.version() == 1


@BOTH_DATABASES
def test_the_platform_commands(rig: Rig, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    doorctl = str(Path(sys.executable).with_name("doorctl"))
    keys = tmp_path / "site.json"
    keys.write_text(json.dumps(rig.site.keys))
    db = rig.store.url
    broker = f"{rig.broker.host}:{rig.broker.port}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([doorctl, "platform", *args], capture_output=True, text=True,
                              timeout=120)

    card, ref = rig.site.issue()
    r = run("card", "issue", ref.hex(), "--resident", "r-7", "--room", "207", "--doors", "0",
            "--from", str(TODAY - YEAR), "--to", str(TODAY + YEAR), "--keys", str(keys), "--db", db,
            "--broker", broker)
    assert r.returncode == 0 and f"{DEVICE} updated to 1" in r.stdout, r.stderr
    assert rig.swipe(card) is True
    r = run("card", "lost", ref.hex(), "--keys", str(keys), "--db", db, "--broker", broker)
    assert r.returncode == 0 and f"{DEVICE} updated to 2" in r.stdout
    assert rig.swipe(card) is False
    r = run("card", "unblock", "00" * 8, "--keys", str(keys), "--db", db)
    assert r.returncode == 1 and "is not issued" in r.stderr
    cards = json.loads(run("card", "list", "--keys", str(keys), "--db", db, "--json").stdout)
    assert [(c["ref"], c["status"], c["room"]) for c in cards] == [(ref.hex(), "lost", "207")]
    rig.io.set_input("door_contact", "open")  # forced
    wait_until(lambda: any(a["alarm"] == "forced_open" for a in json.loads(
        run("alarms", "--db", db, "--json").stdout)))
    cmd_id = rig.platform.command(DEVICE, "patrol", {}, bytes.fromhex(rig.site.keys["keys"]["command"]))
    assert rig.platform.wait_reply(cmd_id, 10) is not None
    wait_until(lambda: (rig.store.device(DEVICE) or {}).get("status", {}).get("cache_version") == 2)
    doors = json.loads(run("doors", "--db", db, "--keys", str(keys), "--json").stdout)
    assert doors[0]["door"] == DEVICE and doors[0]["whitelist"] == 2 and doors[0]["lag"] == 0
    assert doors[0]["online"] is True and doors[0]["state"] in ("forced_open", "open")
    rep = json.loads(run("residence-report", "--card", ref.hex(), "--from", "2020-01-01", "--to",
                         "2020-02-15", "--db", db, "--json").stdout)
    assert rep["days_with_entry"] == {"2020-01": 0, "2020-02": 0}


def test_renewal_extends_validity_across_the_old_expiry(rig: Rig) -> None:
    card, ref = rig.site.issue()
    site_today = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=SITE_TZ_MIN)).date()
    rig.reg.issue(ref.hex(), "r-9", "109", [0], site_today - YEAR, site_today - dt.timedelta(days=1))
    rig.sync()
    assert rig.swipe(card) is False  # expired yesterday
    rig.reg.renew(ref.hex(), site_today + YEAR)
    rig.sync()
    assert rig.swipe(card) is True


def test_a_door_offline_during_several_operations_converges_on_reconnect(rig: Rig) -> None:
    (a, ra), (b, rb), (c, rc) = rig.site.issue(), rig.site.issue(), rig.site.issue()
    rig.reg.issue(ra.hex(), "r-1", "101", [0], TODAY - YEAR, TODAY + YEAR)
    rig.reg.issue(rb.hex(), "r-2", "102", [0], TODAY - YEAR, TODAY + YEAR)
    rig.sync()
    rig.dev.kill()  # the door is off while the platform works
    rig.reg.report_lost(ra.hex())
    rig.reg.suspend(rb.hex())
    rig.reg.issue(rc.hex(), "r-3", "103", [0], TODAY - YEAR, TODAY + YEAR)
    rig.io.close()
    rig.link.close()
    rig.platform.cache_states.pop(DEVICE, None)
    rig.dev.restart()
    wait_until(lambda: rig.platform.cache_states.get(DEVICE, {}).get("version") == 2)
    rig.link = rig.emu.connect(rig.dev.reader_addr)
    rig.io = VirtualIO(rig.dev.io_addr)
    wait_until(lambda: bool(rig.io.status().get("clock_synced")))
    rig.sync()  # one delta from 2 to 5
    assert rig.platform.cache_states[DEVICE]["version"] == 5
    assert [rig.swipe(x) for x in (a, b, c)] == [False, False, True]


@BOTH_DATABASES
def test_the_running_platform_updates_a_door_that_comes_back_behind(rig: Rig) -> None:
    (a, ra), (b, rb) = rig.site.issue(), rig.site.issue()
    rig.reg.issue(ra.hex(), "r-1", "101", [0], TODAY - YEAR, TODAY + YEAR)
    rig.sync()
    attach(rig.platform, rig.reg)  # as `doorctl platform run --keys site.json`
    rig.dev.kill()
    rig.reg.report_lost(ra.hex())
    rig.reg.issue(rb.hex(), "r-2", "102", [0], TODAY - YEAR, TODAY + YEAR)
    rig.io.close()
    rig.link.close()
    rig.dev.restart()  # it reports version 1 when it connects; nobody calls sync
    wait_until(lambda: rig.platform.cache_states.get(DEVICE, {}).get("version") == 3, 30)
    rig.link = rig.emu.connect(rig.dev.reader_addr)
    rig.io = VirtualIO(rig.dev.io_addr)
    wait_until(lambda: bool(rig.io.status().get("clock_synced")))
    assert [rig.swipe(x) for x in (a, b)] == [False, True]
