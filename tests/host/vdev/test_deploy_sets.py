"""Deploy keeps the previous set bootable (host_tools/deploy.py, board/vdev/boot.py): the new
set is staged beside the running one and switched to by one atomic record (active.json), so
the power cut or the Ctrl-C at every step of a deploy leaves the virtual door running its old
set or its new one, never the built-in fallback, and a re-run finishes the job. A set that is
not whole boots the previous one, saying why."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import host_tools.deploy as deploy_mod
from host_tools.deploy import deploy
from host_tools.errors import UserError
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import mpremote

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
OLD = "old-set"  # the commit the old set's manifest names: what status reports when it runs

# Makes the deployed set an "old" one that is still whole: every firmware module gets a
# trailing byte (a .mpy loads without it being read), the manifest records the new hashes and
# the commit OLD. Works on the layout before sets too (lib/ and deploy.json at the top).
_MAKE_OLD = """import os,json,hashlib,binascii
try:r=json.loads(open('active.json').read())['active']+'/'
except OSError:r=''
m=json.loads(open(r+'deploy.json').read())
b=bytearray(256)
for n in os.listdir(r+'lib/firmware'):
 p='lib/firmware/'+n
 with open(r+p,'ab') as f:f.write(b'\\0')
 h=hashlib.sha256()
 with open(r+p,'rb') as f:
  while 1:
   k=f.readinto(b)
   if not k:break
   h.update(memoryview(b)[:k])
 m['files'][p]=binascii.hexlify(h.digest()).decode()
m['commit']=%r
with open(r+'deploy.json','w') as f:f.write(json.dumps(m))
"""

# Back to the state before the new deploy: the old set active, the other slot emptied.
_RESET = """import os
def rm(d):
 for e in os.ilistdir(d):
  p=d+'/'+e[0]
  if e[1]==0x4000:rm(p)
  else:os.remove(p)
 os.rmdir(d)
try:rm('sets/b')
except OSError:pass
with open('active.json','w') as f:f.write('{"active": "sets/a", "previous": null}')
"""

WHERE = "import firmware.main as m\nprint(m.__file__)"


def status(dev: VirtualDevice) -> dict[str, Any]:
    with VirtualIO(dev.io_addr) as io:
        return dict(io.status())


def runs(dev: VirtualDevice) -> str:
    """"old" or "new": which deployed set the door runs; fails on the built-in fallback."""
    st = status(dev)
    assert st["ready"] is True and "safe_mode" not in st, st
    assert st.get("deploy_fallback") is None, st
    return "old" if st.get("deployed_commit") == OLD else "new"


@pytest.fixture
def old_door(tmp_path: Path) -> Iterator[VirtualDevice]:
    """A door running a whole deployed set that differs from this repository's."""
    with VirtualDevice(tmp_path / "dev") as dev:
        deploy(dev.pty)
        mpremote(dev.pty, "exec", _MAKE_OLD % OLD)
        dev.restart()
        assert runs(dev) == "old"
        yield dev


def _steps(dev: VirtualDevice, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The mpremote runs of a deploy from the old door, in order (the door is reset after)."""
    real = deploy_mod.mpremote
    calls: list[tuple[str, ...]] = []

    def counting(port: str, *args: str, **kw: Any) -> str:
        calls.append(args)
        return real(port, *args, **kw)

    monkeypatch.setattr(deploy_mod, "mpremote", counting)
    deploy(dev.pty)
    monkeypatch.setattr(deploy_mod, "mpremote", real)
    mpremote(dev.pty, "exec", _RESET)
    dev.restart()
    assert runs(dev) == "old"
    return calls


def _cut_at(n: int, dev: VirtualDevice, how: str) -> Callable[..., str]:
    """mpremote as deploy calls it, cut short at its n-th run (1-based): the installer's
    Ctrl-C before it starts, or the power going 0.3 s into it."""
    real = deploy_mod.mpremote
    count = [0]

    def cut(port: str, *args: str, **kw: Any) -> str:
        count[0] += 1
        if count[0] < n:
            return real(port, *args, **kw)
        if how == "ctrl-c":
            raise KeyboardInterrupt
        killer = threading.Timer(0.3, dev.kill)
        killer.start()
        try:
            # The device is gone 0.3 s in: nothing answers after that.
            real(port, *args, **{**kw, "timeout": 5})
        except UserError:
            pass
        finally:
            killer.join()
        raise KeyboardInterrupt  # whatever came back, the deploy stops here

    return cut


@pytest.mark.timeout(1200)  # a deploy cut at each of its ~8 steps, with a reboot after each
@pytest.mark.parametrize("how", ["ctrl-c", "power-cut"])
def test_a_cut_at_every_step_leaves_the_old_set_or_the_new_one(
        old_door: VirtualDevice, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    dev = old_door
    steps = _steps(dev, monkeypatch)
    switch = next(i for i, a in enumerate(steps, 1) if "active.json.tmp" in " ".join(a))
    assert len(steps) > 4 and switch >= len(steps) - 1, steps
    real = deploy_mod.mpremote
    for n in range(1, len(steps) + 1):
        monkeypatch.setattr(deploy_mod, "mpremote", _cut_at(n, dev, how))
        with pytest.raises(KeyboardInterrupt):
            deploy(dev.pty)
        monkeypatch.setattr(deploy_mod, "mpremote", real)
        dev.kill()  # and the power goes (again)
        dev.restart()
        got = runs(dev)
        if n < switch or (n == switch and how == "ctrl-c"):
            assert got == "old", (n, steps[n - 1][:2])
        elif n > switch:
            assert got == "new", (n, steps[n - 1][:2])
        if n < len(steps):
            mpremote(dev.pty, "exec", _RESET)
    # The same command again finishes the last one.
    deploy(dev.pty)
    dev.restart()
    assert runs(dev) == "new"


def test_an_interrupted_deploy_runs_the_previous_set_not_the_built_in_one(
        old_door: VirtualDevice) -> None:
    dev = old_door

    def ctrl_c(done: int, total: int, name: str) -> None:
        if 0 < done < total:
            raise KeyboardInterrupt  # the installer's Ctrl-C, one batch into the copying

    with pytest.raises(KeyboardInterrupt):
        deploy(dev.pty, ctrl_c)
    dev.kill()
    dev.restart()
    assert runs(dev) == "old"
    assert mpremote(dev.pty, "exec", WHERE).strip().startswith("/flash/")  # deployed code
    r = subprocess.run([DOORCTL, "deploy", "-p", dev.pty], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    dev.restart()
    assert runs(dev) == "new"


def test_ctrl_c_on_the_command_is_one_line_and_the_door_keeps_a_deployed_set(
        old_door: VirtualDevice) -> None:
    dev = old_door
    proc = subprocess.Popen([DOORCTL, "deploy", "-p", dev.pty], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)  # somewhere in the deploy
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted")
    dev.kill()
    dev.restart()
    assert runs(dev) in ("old", "new")


def test_a_corrupt_active_set_boots_the_previous_one_and_says_why(
        old_door: VirtualDevice) -> None:
    dev = old_door
    deploy(dev.pty)
    record = json.loads(mpremote(dev.pty, "exec", "print(open('active.json').read())"))
    assert record == {"active": "sets/b", "previous": "sets/a"}
    # One byte of one file of the active set changes (a flash fault, a hand edit).
    mpremote(dev.pty, "exec", "f=open('sets/b/lib/firmware/door.mpy','r+b')\nf.seek(40)\n"
                              "c=f.read(1)\nf.seek(40)\nf.write(bytes([c[0]^1]))\nf.close()")
    dev.restart()
    st = status(dev)
    assert st["ready"] is True and "safe_mode" not in st, st
    assert st["deployed_set"] == "sets/a" and st["deployed_commit"] == OLD, st
    assert st["deploy_fallback"] == "previous", st
    assert "lib/firmware/door.mpy differs" in st["deploy_fallback_why"], st
    assert mpremote(dev.pty, "exec", WHERE).strip() == "/flash/sets/a/lib/firmware/main.mpy"
    # Deploy again: the active set is re-staged in the other slot and switched to.
    deploy(dev.pty)
    dev.restart()
    assert runs(dev) == "new"


def deployed_files_item(dev: VirtualDevice, tmp: Path) -> dict[str, str]:
    r = subprocess.run([DOORCTL, "selftest", "-p", dev.pty, "--relay", "skip", "--json",
                        "--report-dir", str(tmp)], capture_output=True, text=True, timeout=300)
    items = json.loads(r.stdout)["items"]
    return dict(next(i for i in items if i["item"] == "deployed files"))


def test_a_repeat_deploy_changes_nothing_and_keeps_both_sets(old_door: VirtualDevice,
                                                             tmp_path: Path) -> None:
    dev = old_door
    first = deploy(dev.pty)
    assert first.copied  # the old set's modules differ
    # selftest checks the active set's files against its manifest.
    assert deployed_files_item(dev, tmp_path)["result"] == "pass"
    mpremote(dev.pty, "exec", "with open('sets/b/lib/firmware/log.mpy','ab') as f: f.write(b'x')")
    item = deployed_files_item(dev, tmp_path)
    assert item["result"] == "fail" and "lib/firmware/log.mpy" in item["detail"], item
    mpremote(dev.pty, "exec", "d=open('sets/b/lib/firmware/log.mpy','rb').read()\n"
                              "with open('sets/b/lib/firmware/log.mpy','wb') as f: f.write(d[:-1])")
    again = deploy(dev.pty)
    assert again.copied == [] and again.removed == []
    record = json.loads(mpremote(dev.pty, "exec", "print(open('active.json').read())"))
    assert record == {"active": "sets/b", "previous": "sets/a"}
    listing = mpremote(dev.pty, "exec", "import os\nprint(sorted(os.listdir('sets')), "
                                        "sorted(os.listdir()))")
    assert "['a', 'b']" in listing and "deploy.busy" not in listing


FLIP = ("f=open('sets/b/lib/firmware/door.mpy','r+b')\nf.seek(40)\n"
        "c=f.read(1)\nf.seek(40)\nf.write(bytes([c[0]^1]))\nf.close()")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("how", ["ctrl-c", "power-cut"])
def test_a_deploy_cut_while_the_door_runs_its_fallback_keeps_that_set(
        old_door: VirtualDevice, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """The active set is not whole, so the door runs the previous one: the next deploy
    stages into the broken active slot, never over the set the door runs."""
    dev = old_door
    real = deploy_mod.mpremote
    deploy(dev.pty)                       # active b (new), previous a (old)
    mpremote(dev.pty, "exec", FLIP)       # a flash fault in the active set
    dev.restart()
    st = status(dev)
    assert st["deployed_set"] == "sets/a" and st["deploy_fallback"] == "previous", st
    # Cut at the 3rd console run (probe, prepare the slot, copy a batch).
    monkeypatch.setattr(deploy_mod, "mpremote", _cut_at(3, dev, how))
    with pytest.raises(KeyboardInterrupt):
        deploy(dev.pty)
    monkeypatch.setattr(deploy_mod, "mpremote", real)
    dev.kill()
    dev.restart()
    st = status(dev)
    assert st.get("deployed_set") == "sets/a" and st.get("deployed_commit") == OLD, st
    # The same command again finishes: the new set in slot b, the one that ran kept as previous.
    deploy(dev.pty)
    record = json.loads(mpremote(dev.pty, "exec", "print(open('active.json').read())"))
    assert record == {"active": "sets/b", "previous": "sets/a"}
    dev.restart()
    assert runs(dev) == "new"


@pytest.mark.parametrize("content", ["", '{"active": "sets/b", "prev'])
def test_an_unreadable_active_json_boots_the_newest_whole_set_and_deploy_repairs_it(
        old_door: VirtualDevice, content: str) -> None:
    dev = old_door
    deploy(dev.pty)                       # two whole sets: b active (newest), a previous
    mpremote(dev.pty, "exec", "with open('active.json','w') as f:f.write(%r)" % content)
    dev.restart()
    st = status(dev)
    assert st["ready"] is True and "safe_mode" not in st, st
    assert st.get("deployed_set") == "sets/b" and st.get("deploy_fallback") == "newest", st
    assert st.get("deploy_fallback_why") == "active.json unreadable", st
    deploy(dev.pty)                       # stages into a, the set the door does not run
    record = json.loads(mpremote(dev.pty, "exec", "print(open('active.json').read())"))
    assert record == {"active": "sets/a", "previous": "sets/b"}
    dev.restart()
    assert runs(dev) == "new"


@pytest.mark.parametrize(("active", "booted", "files", "slot"), [
    ({"active": "sets/b", "previous": "sets/a"}, {"set": "sets/b"}, ["sets/b/deploy.json"],
     "sets/a"),
    # the door runs its fallback: the broken active slot is staged, not the running set
    ({"active": "sets/b", "previous": "sets/a"}, {"set": "sets/a"}, ["sets/a/deploy.json"],
     "sets/b"),
    # a record the flash no longer bears out (that set's manifest is gone): active.json decides
    ({"active": "sets/a", "previous": None}, {"set": "sets/b"}, [], "sets/b"),
    # active.json unreadable: the set the door runs is kept
    (None, {"set": "sets/b"}, ["sets/b/deploy.json"], "sets/a"),
    # a boot entry older than booted.json: active.json decides
    ({"active": "sets/a", "previous": None}, None, ["sets/a/deploy.json"], "sets/b"),
])
def test_the_staging_slot_is_never_the_set_the_door_runs(
        active: dict[str, Any] | None, booted: dict[str, Any] | None, files: list[str],
        slot: str) -> None:
    info = deploy_mod.DeviceInfo(platform="linux", mpy_version=6, machine="",
                                 files=dict.fromkeys(files, "0" * 64), active=active,
                                 booted=booted)
    assert deploy_mod.staging_slot(deploy_mod.active_sets(info)[0],
                                   deploy_mod.running_set(info)) == slot
