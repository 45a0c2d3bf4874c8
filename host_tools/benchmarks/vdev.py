"""Virtual device start-up time and the firmware's idle heap, beside bare-interpreter baselines."""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from host_tools.paths import micropython
from host_tools.vdev.device import VirtualDevice, VirtualDeviceError
from host_tools.vdev.io_client import VirtualIO

FIGURES = {
    "vdev.boot_s": "virtual device: process start to firmware ready (median of 5), s",
    "vdev.boot_baseline_s": "baseline: bare `micropython -c pass` start to exit (median of 5), s",
    "vdev.heap_peak_kib": "firmware idle loop: peak heap in use over 3 s, KiB (default heap, 256K)",
    "vdev.heap_baseline_kib": "baseline: bare interpreter heap in use after start, KiB",
    "vdev.heap_min_kib": "smallest heap (8 KiB steps from 64) in which the virtual device boots "
                         "to ready, KiB (the device-code target is 64)",
}


def _min_heap_kib() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        for kib in range(64, 257, 8):
            dev = VirtualDevice(Path(tmp) / f"h{kib}", heap=f"{kib}K")
            try:
                dev.start()
            except VirtualDeviceError:
                continue
            finally:
                dev.stop()
            return float(kib)
    return float("nan")


def _boot_times(n: int = 5) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        dev = VirtualDevice(Path(tmp) / "d")
        dev.start()  # first start creates the flash images; not timed
        dev.stop()
        for _ in range(n):
            dev = VirtualDevice(Path(tmp) / "d")
            t = time.perf_counter()
            dev.start()
            times.append(time.perf_counter() - t)
            dev.stop()
    return times


def run(names: set[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    if names & {"vdev.boot_s", "vdev.boot_baseline_s"}:
        out["vdev.boot_s"] = statistics.median(_boot_times())
        base = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([micropython(), "-c", "pass"], check=True)
            base.append(time.perf_counter() - t)
        out["vdev.boot_baseline_s"] = statistics.median(base)
    if names & {"vdev.heap_peak_kib", "vdev.heap_baseline_kib"}:
        with tempfile.TemporaryDirectory() as tmp, VirtualDevice(Path(tmp) / "d") as dev, \
                VirtualIO(dev.io_addr) as io:
            time.sleep(3.0)
            out["vdev.heap_peak_kib"] = io.status()["heap_peak_alloc"] / 1024
        bare = subprocess.run([micropython(), "-c", "import gc; gc.collect(); print(gc.mem_alloc())"],
                              capture_output=True, text=True, check=True).stdout
        out["vdev.heap_baseline_kib"] = int(bare) / 1024
    if "vdev.heap_min_kib" in names:
        out["vdev.heap_min_kib"] = _min_heap_kib()
    return out
