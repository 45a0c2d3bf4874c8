"""Put a door's files on a running virtual device through its console (the real mpremote).

Each file is written to a temporary name and renamed, so a power cut leaves the old file or
the new one. Used by the demo, the tests and the HIL rig to give a virtual door its
configuration, its key file and its whitelist cache (docs/virtual-device.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from host_tools.errors import EXIT_FAILED, UserError

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))
CHUNK = 2048  # bytes per exec: the console program stays small whatever the file


def mpremote(pty: str, *args: str, timeout: float = 60.0) -> str:
    """Run mpremote against the device's console; UserError with its output on failure."""
    try:
        proc = subprocess.run([MPREMOTE, "connect", pty, *args], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"the device on {pty} stopped answering (nothing for {timeout:.0f} s): "
                        "check its power and cable, then run the command again",
                        EXIT_FAILED) from None
    if proc.returncode != 0:
        raise UserError(f"mpremote failed on {pty}: {(proc.stdout + proc.stderr).strip()[-400:]}",
                        EXIT_FAILED)
    return proc.stdout


def put_file(pty: str, path: str, data: bytes) -> None:
    """Write `data` to `path` (relative to the device's filesystem root) atomically."""
    tmp = path + ".tmp"
    parts = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    program = []
    for i, part in enumerate(parts):
        mode = "wb" if i == 0 else "ab"
        program.append(f"with open({tmp!r}, {mode!r}) as f: f.write(bytes.fromhex({part.hex()!r}))")
        if len("\n".join(program)) > 24 * CHUNK or i == len(parts) - 1:
            mpremote(pty, "exec", "\n".join(program))
            program = []
    mpremote(pty, "exec", f"import os\nos.rename({tmp!r}, {path!r})")


def put_cache(port: str, snapshot: bytes) -> None:
    """Install a whitelist snapshot as the door's cache, as an installer does: the new file
    replaces the old one in one rename; the overlay of pending changes on the old one is then
    dropped (a cut before that leaves it refused: fail secure), and so is the version floor,
    so the platform's versions go on from this snapshot's (offline_cache/cache.py)."""
    mpremote(port, "exec", "import os\ntry:\n os.mkdir('cache')\nexcept OSError:\n pass")
    put_file(port, "cache/main.bin", snapshot)
    mpremote(port, "exec", "import os\nfor n in ('cache/overlay.bin', 'cache/floor'):\n"
                           " try:\n  os.remove(n)\n except OSError:\n  pass")


def provision(pty: str, config: dict[str, Any] | None = None, keys: dict[str, Any] | None = None,
              cache: bytes | None = None) -> None:
    """Configuration (config.json), door key file (keys.json) and whitelist snapshot
    (cache/main.bin). The firmware reads them at boot: restart the device afterwards."""
    if config is not None:
        put_file(pty, "config.json", json.dumps(config).encode())
    if keys is not None:
        put_file(pty, "keys.json", json.dumps(keys).encode())
    if cache is not None:
        put_cache(pty, cache)
