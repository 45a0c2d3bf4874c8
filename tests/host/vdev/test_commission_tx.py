"""Commissioning is one transaction on the virtual door (firmware/staging.py,
host_tools/door_stage.py): the power cut after every step, the installer's Ctrl-C in the middle
of the whitelist, and a re-run that resumes; and a 100,000-card whitelist through the console.
The door is always wholly the old one or wholly the new one."""

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
from host_tools.commands.commission import build_config, door_files
from host_tools.console import mpremote
from host_tools.door_stage import PIECE, PIECES_PER_RUN, Transaction
from host_tools.vdev.device import VirtualDevice
from offline_cache import fmt

DOORCTL = str(Path(sys.executable).with_name("doorctl"))

# What the door holds and uses after a boot: each file's site, and the running firmware's.
_VIEW = """import json
from firmware.main import status, running
v={}
for n in ('config.json','keys.json'):
 try:v[n]=json.loads(open(n).read())['site_id']
 except OSError:v[n]=None
try:
 h=open('cache/main.bin','rb').read(36)
 v['whitelist']=(h[16]<<24)|(h[17]<<16)|(h[18]<<8)|h[19]
except OSError:v['whitelist']=None
import os
v['leftovers']=[n for n in os.listdir() if n.endswith('.tmp')]
v['ready']=status['ready']
v['running_site']=running['keystore'].site_id if running.get('keystore') else None
v['device_id']=running['config']['device_id']
print(json.dumps(v))
"""


def cards(n: int) -> list[tuple[bytes, int, bool]]:
    return [(i.to_bytes(8, "big"), fmt.ACTIVE, False) for i in range(1, n + 1)]


def view(dev: VirtualDevice) -> dict[str, object]:
    return dict(json.loads(mpremote(dev.pty, "exec", _VIEW).strip().splitlines()[-1]))


def door_of(kit: SiteKit, n_cards: int, device_id: str) -> tuple[dict[str, bytes], list[str]]:
    cfg = build_config(device_id, kit.site_id, 2, "127.0.0.1:1", None, None, False, None, None,
                       False, {"unlock_ms": 5000, "held_open_ms": 30000}, False, False)
    return door_files(kit.keys, cfg, {}, kit.snapshot(1, cards(n_cards)))


def assert_whole(v: dict[str, object], site: int, device_id: str) -> None:
    assert v["ready"] is True, v
    assert (v["config.json"], v["keys.json"], v["whitelist"], v["running_site"]) == (site,) * 4, v
    assert v["device_id"] == device_id and v["leftovers"] == [], v


@pytest.fixture()
def old_door(tmp_path: Path) -> Iterator[tuple[VirtualDevice, SiteKit]]:
    """A door commissioned for site 2024 with 10 cards."""
    old = SiteKit(2024)
    dev = VirtualDevice(tmp_path / "door").start()
    try:
        files, remove = door_of(old, 10, "old.b1.d2")
        Transaction(dev.pty, files, remove).run()
        dev.restart()
        assert_whole(view(dev), 2024, "old.b1.d2")
        yield dev, old
    finally:
        dev.stop()


def test_a_power_cut_after_every_step_leaves_the_old_door_or_the_new(old_door) -> None:
    dev, _ = old_door
    new = SiteKit(2025)
    files, remove = door_of(new, 5000, "new.b1.d2")  # 75 KB: streamed in several runs
    assert len(files["cache/main.bin"]) > PIECE * PIECES_PER_RUN
    n_steps = len(Transaction(dev.pty, files, remove).steps())
    assert [name for name, _ in Transaction(dev.pty, files, remove).steps()][-1] == "commit"
    for done in range(n_steps + 1):
        tx = Transaction(dev.pty, files, remove)
        for _, step in tx.steps()[:done]:
            step()
        dev.kill()  # the power goes
        dev.restart()
        if done < n_steps:
            assert_whole(view(dev), 2024, "old.b1.d2")
        else:
            assert_whole(view(dev), 2025, "new.b1.d2")
    listing = mpremote(dev.pty, "exec", "import os\nprint(os.listdir(), os.listdir('cache'))")
    assert ".stage" not in listing and "stage.json" not in listing and "overlay" not in listing


def test_ctrl_c_in_the_whitelist_then_a_rerun_resumes(old_door, tmp_path: Path) -> None:
    dev, _ = old_door
    new = SiteKit(2025)
    files, remove = door_of(new, 8000, "new.b1.d2")

    def interrupt(done: int, total: int) -> None:
        if done >= PIECE * PIECES_PER_RUN:
            raise KeyboardInterrupt  # the installer's Ctrl-C, one run into the whitelist

    with pytest.raises(KeyboardInterrupt):
        Transaction(dev.pty, files, remove, progress=interrupt).run()
    dev.kill()
    dev.restart()
    assert_whole(view(dev), 2024, "old.b1.d2")
    again = Transaction(dev.pty, files, remove)
    again.run()
    assert again.resumed_from["cache/main.bin"] >= PIECE * PIECES_PER_RUN  # not from the start
    dev.restart()
    assert_whole(view(dev), 2025, "new.b1.d2")


def test_ctrl_c_on_the_command_is_one_line_and_the_door_unchanged(old_door, tmp_path: Path) -> None:
    dev, _ = old_door
    new = SiteKit(2025)
    (tmp_path / "site.json").write_text(json.dumps(new.keys))
    (tmp_path / "wl.bin").write_bytes(new.snapshot(1, cards(20000)))
    proc = subprocess.Popen([DOORCTL, "commission", "-p", dev.pty, "--keys",
                             str(tmp_path / "site.json"), "--device-id", "new.b1.d2", "--door-no",
                             "2", "--broker", "127.0.0.1:1", "--cache", str(tmp_path / "wl.bin")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)  # well into the whitelist's 300 KB
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: interrupted") and "Traceback" not in err
    dev.restart()
    assert_whole(view(dev), 2024, "old.b1.d2")


@pytest.mark.slow
def test_a_100000_card_whitelist_is_commissioned_through_the_console(tmp_path: Path) -> None:
    kit = SiteKit(2026)
    (tmp_path / "site.json").write_text(json.dumps(kit.keys))
    wl = tmp_path / "wl.bin"
    wl.write_bytes(kit.snapshot(7, cards(100_000)))
    with VirtualDevice(tmp_path / "door") as dev:
        r = subprocess.run([DOORCTL, "commission", "-p", dev.pty, "--keys",
                            str(tmp_path / "site.json"), "--device-id", "big.b1.d1", "--door-no",
                            "1", "--broker", "127.0.0.1:1", "--cache", str(wl)],
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-500:]
        assert "whitelist (1500068 bytes)" in r.stdout
        dev.restart(timeout_s=120)
        assert_whole(view(dev), 2026, "big.b1.d1")
        out = mpremote(dev.pty, "exec", "from firmware.main import running, status\n"
                       "c=running['cache']\nprint(status['cache_version'], c.error, "
                       "c.lookup((99999).to_bytes(8,'big')) is not None, "
                       "c.lookup((100001).to_bytes(8,'big')) is None)")
        assert out.split() == ["7", "None", "True", "True"], out


def test_the_whitelist_can_come_from_the_platform_with_its_versions(tmp_path: Path) -> None:
    import datetime as dt

    from reference_platform.cards import CardRegistry
    from reference_platform.store import Store

    kit = SiteKit(2027)
    keys = tmp_path / "site.json"
    keys.write_text(json.dumps(kit.keys))
    db = tmp_path / "p.db"
    registry = CardRegistry(Store(str(db)), kit.keys)
    today = dt.date.today()
    for i in (1, 2):
        registry.issue(f"{i:016x}", f"r{i}", "101", [2], today - dt.timedelta(days=1),
                       today + dt.timedelta(days=30))
    registry.report_lost(f"{2:016x}")
    assert registry.version() == 3
    base = ["commission", "--keys", str(keys), "--device-id", "plat.b1.d2", "--door-no", "2",
            "--broker", "127.0.0.1:1"]
    with VirtualDevice(tmp_path / "door") as dev:
        for extra, message in ((["--whitelist-from", str(tmp_path / "typo.db")], "no such database"),
                               (["--whitelist-from", str(db), "--cache", str(keys)], "give one")):
            r = subprocess.run([DOORCTL, *base, "-p", dev.pty, *extra], capture_output=True,
                               text=True, timeout=120)
            assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
        r = subprocess.run([DOORCTL, *base, "-p", dev.pty, "--whitelist-from", str(db)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        dev.restart()
        out = mpremote(dev.pty, "exec", "from firmware.main import running, status\n"
                       "c=running['cache']\nprint(status['cache_version'], "
                       "c.lookup(bytes.fromhex('0000000000000001'))[1], "
                       "c.lookup(bytes.fromhex('0000000000000002'))[1])")
        assert out.split() == ["3", str(fmt.ACTIVE), str(fmt.LOST)], out  # the platform's version


def test_a_whitelist_that_does_not_fit_is_refused_before_anything_is_written(
        old_door, tmp_path: Path) -> None:
    dev, _ = old_door
    # Fill the flash until about 200 KiB are left.
    mpremote(dev.pty, "exec", "import os\nb=bytes(4096)\nwith open('filler','wb') as f:\n"
                              " while 1:\n  s=os.statvfs('.')\n  if s[0]*s[3]<200*1024:break\n"
                              "  f.write(b)", timeout=300)
    new = SiteKit(2025)
    (tmp_path / "site.json").write_text(json.dumps(new.keys))
    (tmp_path / "wl.bin").write_bytes(new.snapshot(1, cards(20000)))  # 300 KB
    r = subprocess.run([DOORCTL, "commission", "-p", dev.pty, "--keys", str(tmp_path / "site.json"),
                        "--device-id", "new.b1.d2", "--door-no", "2", "--broker", "127.0.0.1:1",
                        "--cache", str(tmp_path / "wl.bin")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1 and "KiB of flash free" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    listing = mpremote(dev.pty, "exec", "import os\nprint(os.listdir(), os.listdir('cache'))")
    assert ".stage" not in listing and "stage.json" not in listing
    dev.restart()
    assert_whole(view(dev), 2024, "old.b1.d2")
