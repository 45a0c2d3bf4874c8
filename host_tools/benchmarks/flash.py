"""littlefs on the NOR-flash simulator: what each file operation costs the flash, and how
fast the simulator itself programs, erases and reads (beside plain file writes)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from host_tools.mpy_build import DEFAULT_BUILD_DIR, build_device_tree
from host_tools.paths import micropython, micropython_env

SCRIPT = Path(__file__).with_name("device") / "flash_ops.py"
REPS = 10
SMOKE = {"REPS": 2}

_OPS = {
    "create": "create a 100-byte file",
    "replace": "replace a 200-byte file (write temp + rename)",
    "overwrite": "overwrite a 200-byte file in place",
    "append": "append 24 bytes to a log (open, write, close)",
    "mkdir": "mkdir",
    "remove": "remove a file",
}

FIGURES = {}
for _op, _what in _OPS.items():
    FIGURES[f"flash.{_op}_bytes"] = f"littlefs, 4 KiB blocks: {_what}, bytes programmed (mean of {REPS})"
    FIGURES[f"flash.{_op}_erases"] = f"littlefs, 4 KiB blocks: {_what}, blocks erased (mean of {REPS})"
FIGURES.update({
    "flash.sim_program_us": "flash simulator (MicroPython, image file): program 256 bytes, us",
    "flash.sim_erase_us": "flash simulator (MicroPython, image file): erase a 4 KiB block, us",
    "flash.sim_read_us": "flash simulator (MicroPython, image file): read 256 bytes, us",
    "flash.baseline_write_us": "baseline: write 256 bytes to a plain file (MicroPython), us",
})


QUICK_FIGURES = list(FIGURES)


def run(names: set[str]) -> dict[str, float]:
    build_device_tree()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([micropython(), "-X", "heapsize=64K", str(SCRIPT), tmp, str(REPS)],
                              env=micropython_env(DEFAULT_BUILD_DIR), cwd=tmp, capture_output=True,
                              text=True, check=True, timeout=300)
    out: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts[0] == "op":
            out[f"flash.{parts[1]}_bytes"] = float(parts[2])
            out[f"flash.{parts[1]}_erases"] = float(parts[3])
        elif parts[0] == "sim":
            out["flash.sim_program_us"] = float(parts[1])
            out["flash.sim_erase_us"] = float(parts[2])
            out["flash.sim_read_us"] = float(parts[3])
        elif parts[0] == "baseline":
            out["flash.baseline_write_us"] = float(parts[1])
    return out
