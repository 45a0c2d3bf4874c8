"""Journal append cost and flash wear on the MicroPython unix port, beside the naive
littlefs append-and-flush measured in the same process."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from host_tools.mpy_build import build_device_tree
from host_tools.paths import micropython, micropython_env
from journal_format import RECORD_SIZE

SCRIPT = Path(__file__).with_name("device") / "journal_append.py"
N = 5000
SMOKE = {"N": 200}
QUICK = {"N": 1000}

FIGURES = {
    "journal.record_bytes": "size of one journal record, bytes",
    "journal.append_ms": f"journal append, mean of {N} on the flash simulator (MicroPython, 64K heap), ms",
    "journal.append_worst_ms": "journal append, worst single append in the same run, ms",
    "journal.flash_bytes_per_event": "flash bytes programmed per event (flash simulator counters)",
    "journal.erases_per_event": "erase blocks per event (done ahead, at idle, by maintain())",
    "journal.baseline_append_ms": "baseline: append+flush of a 32-byte record to a littlefs file, ms",
    "journal.baseline_flash_bytes_per_event": "baseline: littlefs append+flush, bytes programmed per event",
    "journal.baseline_erases_per_event": "baseline: littlefs append+flush, erase blocks per event",
}


QUICK_FIGURES = list(FIGURES)


def run(names: set[str]) -> dict[str, float]:
    out: dict[str, float] = {"journal.record_bytes": float(RECORD_SIZE)}
    with tempfile.TemporaryDirectory() as tmp:
        env = micropython_env(build_device_tree()[0].parents[1])
        proc = subprocess.run([micropython(), "-X", "heapsize=64K", str(SCRIPT), tmp, str(N)],
                              env=env, cwd=tmp, capture_output=True, text=True, check=True,
                              timeout=900)
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts[0] == "journal":
            out["journal.append_ms"] = float(parts[1])
            out["journal.flash_bytes_per_event"] = float(parts[2])
            out["journal.erases_per_event"] = float(parts[3])
            out["journal.append_worst_ms"] = float(parts[4])
        elif parts[0] == "baseline":
            out["journal.baseline_append_ms"] = float(parts[1])
            out["journal.baseline_flash_bytes_per_event"] = float(parts[2])
            out["journal.baseline_erases_per_event"] = float(parts[3])
    return out
