"""Safe mode also leaves a ROM image behind: a recorded ROM image (`deploy --romfs`) whose
application does not start on this flash is taken off the import path with /flash/lib, and the
virtual door comes up on its built-in firmware with its console, instead of dying on the same
ROM code again."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from host_tools.paths import REPO_ROOT, micropython, micropython_env
from host_tools.services import free_port

PREP = """import sys, hashlib, binascii, json
from board.virtual import VirtualBoard
b = VirtualBoard(%(sd)r, 0, 0)
b.mount()
img = open(%(img)r, "rb").read()
d = b.roms()[0]
bs = d.ioctl(5, 0)
n = (len(img) + bs - 1) // bs
for i in range(n):
    d.ioctl(6, i)
buf = bytearray(n * bs)
buf[:len(img)] = img
for i in range(n):
    d.writeblocks(i, memoryview(buf)[i * bs:(i + 1) * bs])
rec = {"partition": 0, "sha256": binascii.hexlify(hashlib.sha256(img).digest()).decode(),
       "size": len(img)}
with open(b.fs_root + "/rom.json", "w") as f:
    f.write(json.dumps(rec))
for x in (d, b.blockdev):
    try:
        x.close()
    except Exception:
        pass
"""


def test_a_rom_image_that_does_not_start_is_set_aside(tmp_path: Path) -> None:
    app = tmp_path / "app" / "firmware"
    app.mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "main.py").write_text("import firmware.no_such_module\n")
    mpremote = str(Path(micropython()).with_name("mpremote"))
    subprocess.run([mpremote, "romfs", "--no-mpy", "--output", str(tmp_path / "app.romfs"), "build",
                    str(tmp_path / "app")], check=True, capture_output=True, timeout=60)
    sd = tmp_path / "sd"
    sd.mkdir()
    subprocess.run([micropython(), "-X", "heapsize=2m", "-c",
                    PREP % {"sd": str(sd), "img": str(tmp_path / "app.romfs")}],
                   check=True, env=micropython_env(), cwd=sd, capture_output=True, timeout=60)
    env = dict(micropython_env(), MICROPYPATH=f"{REPO_ROOT / 'board' / 'vdev' / 'lib'}:{REPO_ROOT}:.frozen")
    proc = subprocess.Popen([micropython(), "-X", "heapsize=512k",
                             str(REPO_ROOT / "board" / "vdev" / "boot.py"),
                             str(sd), str(free_port()), str(free_port())],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=sd, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (sd / "ready.json").exists():
            assert proc.poll() is None, "the door died: " + proc.stderr.read().decode()[-500:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the door never came up"
            time.sleep(0.1)
        ready = None
        while ready is None:  # written in place: read again until the whole object is there
            assert proc.poll() is None
            assert time.monotonic() < deadline, "ready.json never complete"
            try:
                ready = json.loads((sd / "ready.json").read_text())
            except ValueError:
                time.sleep(0.1)
        time.sleep(0.3)
        assert proc.poll() is None  # in safe mode, and still running a moment after
        assert "does not start" in str(ready.get("safe_mode"))
    finally:
        proc.kill()
        proc.wait()
        os.sync()
