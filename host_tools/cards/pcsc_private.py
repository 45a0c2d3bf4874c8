"""A pcscd private to one test or benchmark run, so two runs on one machine cannot reset each
other's cards.

The system pcscd is one service per machine and vpcd's virtual readers listen on fixed ports
(35963/35964): a second suite's virtual card, connecting to the same port, resets the first
one's ("Card was reset"). A private pcscd gets
- its own vpcd ports, from its own reader.conf.d (`pcscd -c DIR`), and
- its own socket: pcscd refuses to start while /run/pcscd/pcscd.comm answers and always
  serves there, so it runs in its own mount namespace (`unshare -m`) where a folder of the
  run is bind-mounted on /run/pcscd. Clients find its socket there through the environment
  variable pcsc-lite reads, PCSCLITE_CSOCK_NAME (read once per process, at the first call).

`isolate(folder)` sets the environment of this process and its children before any PC/SC
call; `pcsc.start_pcscd()` then starts the private pcscd instead of the system one, and
`vcard.vpcd_port()` gives its ports. Without the right to make a mount namespace (not root,
no user namespaces) nothing changes: the system pcscd is used, as before.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

DIR_ENV = "DOORCTL_PCSC_DIR"  # the private pcscd's folder (reader.conf.d/, run/)
PORT_ENV = "DOORCTL_VPCD_PORT"  # vpcd's first slot (the second is the next port)
SOCKET_ENV = "PCSCLITE_CSOCK_NAME"  # pcsc-lite's own variable, read by pyscard's library
OWNER_ENV = "DOORCTL_PCSC_OWNER"  # the test worker the private pcscd above belongs to
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"


def isolated() -> bool:
    return bool(os.environ.get(DIR_ENV))


def can_isolate() -> bool:
    """Whether this user may make a mount namespace (and vpcd is installed)."""
    if shutil.which("unshare") is None or not Path(VPCD_DRIVER).exists():
        return False
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _two_free_ports() -> int:
    """A port p with p and p + 1 free now (vpcd's two slots). Drawn below the kernel's
    ephemeral range, where thousands of client connections (the scale benchmark's doors) and
    their TIME_WAIT remnants do not crowd them out."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, 32000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise OSError("no two adjacent free TCP ports for vpcd")


def isolate(folder: Path) -> bool:
    """Point this process and its children at a private pcscd kept in `folder` (started by
    `pcsc.start_pcscd()` when first needed). False when isolation is not possible here."""
    if isolated():
        return True
    if not can_isolate():
        return False
    port = _two_free_ports()
    conf = folder / "reader.conf.d"
    conf.mkdir(parents=True, exist_ok=True)
    (folder / "run").mkdir(exist_ok=True)
    (conf / "vpcd").write_text(f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME   /dev/null:0x{port:X}\n'
                               f"LIBPATH      {VPCD_DRIVER}\nCHANNELID    0x{port:X}\n")
    os.environ[DIR_ENV] = str(folder)
    os.environ[PORT_ENV] = str(port)
    os.environ[SOCKET_ENV] = str(folder / "run" / "pcscd.comm")
    return True


def start() -> subprocess.Popen[bytes]:
    """The private pcscd of `isolate`, in the foreground of its own mount namespace."""
    folder = os.environ[DIR_ENV]
    exe = shutil.which("pcscd") or "/usr/sbin/pcscd"
    script = ('mkdir -p /run/pcscd && mount --bind "$1/run" /run/pcscd && '
              'exec "$2" -f -c "$1/reader.conf.d"')
    return subprocess.Popen(["unshare", "-m", "sh", "-c", script, "sh", folder, exe],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def isolate_in_temp(owner: str = "") -> tempfile.TemporaryDirectory[str] | None:
    """`isolate` in a new temporary folder; the folder (cleanup() it at the end of the run),
    or None when the run already is isolated or cannot be. `owner` names a test worker
    (pytest-xdist's gw0, gw1, ...): each gets a pcscd of its own, not the one of the process
    that started it (two workers on one pcscd reset each other's cards)."""
    if owner and os.environ.get(OWNER_ENV) != owner:
        for name in (DIR_ENV, PORT_ENV, SOCKET_ENV):
            os.environ.pop(name, None)
        os.environ[OWNER_ENV] = owner
    if isolated():
        return None
    folder = tempfile.TemporaryDirectory(prefix="pcscd-")
    if not isolate(Path(folder.name)):
        folder.cleanup()
        return None
    return folder
