"""A deploy cut half-way never bricks the virtual door: its boot sets a deployed set that is
not the recorded one (or does not import) aside for the built-in firmware and says so in its
status (`safe_mode`), the console comes up, and deploy runs again and puts it right."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.deploy import deploy
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import mpremote

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
WHERE = "import firmware.main as m\nprint(m.__file__)"


def status(dev: VirtualDevice) -> dict[str, object]:
    with VirtualIO(dev.io_addr) as io:
        return dict(io.status())


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[VirtualDevice]:
    with VirtualDevice(tmp_path / "dev") as dev:
        deploy(dev.pty)
        dev.restart()
        assert mpremote(dev.pty, "exec", WHERE).strip() == "/flash/sets/a/lib/firmware/main.mpy"
        assert "safe_mode" not in status(dev)
        yield dev


def test_a_torn_module_boots_the_built_in_firmware_and_deploy_repairs_it(
        deployed: VirtualDevice) -> None:
    dev = deployed
    # What a cut in the middle of copying leaves: one module half-written.
    mpremote(dev.pty, "exec", "d=open('sets/a/lib/firmware/door.mpy','rb').read()\n"
                              "with open('sets/a/lib/firmware/door.mpy','wb') as f: "
                              "f.write(d[:len(d)//2])")
    dev.restart()
    st = status(dev)
    assert st["ready"] is True and "lib/firmware/door.mpy" in str(st["safe_mode"]), st
    assert "/flash/lib/" not in mpremote(dev.pty, "exec", WHERE)  # the built-in code runs
    assert "safe mode" in dev.stderr_tail()
    r = subprocess.run([DOORCTL, "deploy", "-p", dev.pty], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    dev.restart()
    assert "safe_mode" not in status(dev)
    assert mpremote(dev.pty, "exec", WHERE).strip() == "/flash/sets/b/lib/firmware/main.mpy"


def test_deployed_code_that_does_not_import_falls_back(deployed: VirtualDevice) -> None:
    dev = deployed
    # A module whose import fails, recorded as deployed (a broken build, say).
    mpremote(dev.pty, "exec",
             "import os,json,hashlib,binascii\n"
             "with open('sets/a/lib/firmware/main.py','w') as f: f.write('raise ImportError(7)')\n"
             "os.remove('sets/a/lib/firmware/main.mpy')\n"
             "h=binascii.hexlify(hashlib.sha256(b'raise ImportError(7)').digest()).decode()\n"
             "with open('sets/a/deploy.json','w') as f: "
             "f.write(json.dumps({'files':{'lib/firmware/main.py':h}}))")
    dev.restart()
    st = status(dev)
    assert st["ready"] is True and "ImportError: 7" in str(st["safe_mode"]), st
    assert "/flash/lib/" not in mpremote(dev.pty, "exec", WHERE)


def test_ctrl_c_during_a_first_deploy_leaves_a_door_whose_console_comes_up(
        tmp_path: Path) -> None:
    # No set deployed before: the built-in firmware runs until the first one is switched to.
    dev = VirtualDevice(tmp_path / "first").start()
    try:
        _cut_first_deploy(dev)
    finally:
        dev.stop()


def _cut_first_deploy(dev: VirtualDevice) -> None:
    proc = subprocess.Popen([DOORCTL, "deploy", "-p", dev.pty], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)  # in the middle of copying
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted")
    dev.kill()  # and the power goes
    dev.restart()
    st = status(dev)
    assert st["ready"] is True and "deployed_set" not in st, st
    assert mpremote(dev.pty, "exec", "print(6*7)").strip() == "42"
    r = subprocess.run([DOORCTL, "deploy", "-p", dev.pty], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    dev.restart()
    assert "safe_mode" not in status(dev)
    manifest = json.loads(mpremote(dev.pty, "exec", "print(open('sets/a/deploy.json').read())"))
    assert manifest["files"]["lib/firmware/main.mpy"]
