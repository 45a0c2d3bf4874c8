"""Virtual device start-up time and the firmware's idle heap, beside bare-interpreter baselines."""

from __future__ import annotations

import math
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from host_tools.benchmarks import Outcome, failing
from host_tools.console import mpremote
from host_tools.paths import micropython
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO

STAY_UP_S = 2.0  # a boot counts when the firmware is ready and still answers this long after
HEAPS_KIB = range(64, 257, 8)  # tried by the heap searches, smallest first
BOOTS = 5
IDLE_S = 3.0  # the idle loop's peak heap is read after this long
# 16 KiB dies (the "does not fit" path), 512 KiB boots
SMOKE = {"HEAPS_KIB": (16, 512), "BOOTS": 1, "STAY_UP_S": 0.5, "IDLE_S": 0.5}

FIGURES = {
    "vdev.boot_s": "virtual device: process start to firmware ready (median of 5), s",
    "vdev.boot_baseline_s": "baseline: bare `micropython -c pass` start to exit (median of 5), s",
    "vdev.heap_peak_kib": "firmware idle loop: peak heap in use over 3 s, KiB (default heap, 384K)",
    "vdev.heap_baseline_kib": "baseline: bare interpreter heap in use after start, KiB",
    "vdev.heap_min_kib": "smallest heap (8 KiB steps from 64) in which the virtual device boots "
                         "to ready and stays up, the application's .mpy files imported (bytecode "
                         "in the heap), KiB (the device-code target is 64)",
    "vdev.heap_min_rom_kib": "the same, the application deployed --romfs: smallest heap beyond "
                             "the ROM image (which stands in for memory-mapped flash), KiB",
    "vdev.heap_peak_rom_kib": "firmware idle loop from ROM: peak heap in use over 3 s, less the "
                              "ROM image, KiB (beside vdev.heap_peak_kib)",
    "vdev.rom_image_kib": "the application's ROMFS image (firmware, crypto, offline_cache), KiB",
    "vdev.qstr_count": "names the idle firmware interned in RAM (identifiers of the modules "
                       "loaded from .mpy files; frozen ones are in the image), count",
    "vdev.qstr_headroom": "names that can still be interned before the interpreter allocates "
                          "its next qstr pool, twice the last, in one piece (11 bytes an entry "
                          "on this port: 14 KiB for the 7th pool), which steps the heap_min "
                          "figures up; docs/architecture.md, count",
}
_QSTR_INFO = "import micropython\nmicropython.qstr_info()\n"
# Interns names one at a time on a bare interpreter, reporting the pools after each.
_FIRST_POOL_PROGRAM = (
    "import micropython\n"
    "class C:\n pass\n"
    "for i in range(200):\n"
    " setattr(C, 'qstr_probe_%d' % i, 0)\n"
    " micropython.qstr_info()\n")


def _boots(state: Path, heap_kib: int) -> bool:
    """Whether the device boots to ready in this heap and stays up. A device that dies
    for any reason (MemoryError, a closed I/O channel, no answer) does not fit."""
    dev = VirtualDevice(state, heap=f"{heap_kib}K")
    try:
        dev.start()
        time.sleep(STAY_UP_S)
        with VirtualIO(dev.io_addr) as io:
            return bool(io.status().get("ready"))
    except Exception:  # noqa: BLE001 - any death at this heap is the answer "does not fit"
        return False
    finally:
        dev.stop()


def _min_heap_kib(template: Path | None = None, extra_kib: int = 0) -> float:
    """Smallest heap (8 KiB steps from 64, plus `extra_kib`) in which a fresh copy of the
    `template` state (or a blank device) boots and stays up; the figure excludes extra_kib."""
    with tempfile.TemporaryDirectory() as tmp:
        for kib in HEAPS_KIB:
            state = Path(tmp) / f"h{kib}"
            if template is not None:
                shutil.copytree(template, state)
                for f in ("ready.json", "vdev.json"):
                    (state / f).unlink(missing_ok=True)
            if _boots(state, kib + extra_kib):
                return float(kib)
    raise RuntimeError(f"the virtual device boots in no heap up to {max(HEAPS_KIB)} KiB")


def _rom_template(tmp: Path) -> tuple[Path, int]:
    """A virtual device's state with the application deployed --romfs; its image's size."""
    from host_tools.deploy import deploy

    state = tmp / "rom"
    with VirtualDevice(state) as dev:
        result = deploy(dev.pty, romfs=True)
    assert result.rom is not None
    return state, int(str(result.rom["size"]))


def _rom_figures(names: set[str], out: dict[str, Outcome]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        template, size = _rom_template(Path(tmp))
        image_kib = math.ceil(size / 1024)
        out["vdev.rom_image_kib"] = size / 1024
        if "vdev.heap_peak_rom_kib" in names:
            with failing(out, "vdev.heap_peak_rom_kib"):
                state = Path(tmp) / "peak"
                shutil.copytree(template, state)
                with VirtualDevice(state) as dev, VirtualIO(dev.io_addr) as io:
                    time.sleep(IDLE_S)
                    st = io.status()
                    if st.get("code") != "rom":
                        raise RuntimeError(f"the device did not run from ROM: {st}")
                    out["vdev.heap_peak_rom_kib"] = (st["heap_peak_alloc"] - st["rom_bytes"]) / 1024
        if "vdev.heap_min_rom_kib" in names:
            with failing(out, "vdev.heap_min_rom_kib"):
                out["vdev.heap_min_rom_kib"] = _min_heap_kib(template, image_kib)


def _boot_times() -> list[float]:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        dev = VirtualDevice(Path(tmp) / "d")
        dev.start()  # first start creates the flash images; not timed
        dev.stop()
        for _ in range(BOOTS):
            dev = VirtualDevice(Path(tmp) / "d")
            t = time.perf_counter()
            dev.start()
            times.append(time.perf_counter() - t)
            dev.stop()
    return times


def run(names: set[str]) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    with failing(out, "vdev.boot_s", "vdev.boot_baseline_s"):
        if names & {"vdev.boot_s", "vdev.boot_baseline_s"}:
            _boot_figures(out)
    with failing(out, "vdev.heap_peak_kib", "vdev.heap_baseline_kib"):
        if names & {"vdev.heap_peak_kib", "vdev.heap_baseline_kib"}:
            _heap_figures(out)
    with failing(out, "vdev.heap_min_kib"):
        if "vdev.heap_min_kib" in names:
            out["vdev.heap_min_kib"] = _min_heap_kib()
    qstr = {"vdev.qstr_count", "vdev.qstr_headroom"}
    with failing(out, *qstr):
        if names & qstr:
            _qstr_figures(out)
    rom = {"vdev.heap_min_rom_kib", "vdev.heap_peak_rom_kib", "vdev.rom_image_kib"}
    with failing(out, *rom):
        if names & rom:
            _rom_figures(names, out)
    return out


def _boot_figures(out: dict[str, Outcome]) -> None:
    out["vdev.boot_s"] = statistics.median(_boot_times())
    base = []
    for _ in range(BOOTS):
        t = time.perf_counter()
        subprocess.run([micropython(), "-c", "pass"], check=True)
        base.append(time.perf_counter() - t)
    out["vdev.boot_baseline_s"] = statistics.median(base)


def _heap_figures(out: dict[str, Outcome]) -> None:
    with tempfile.TemporaryDirectory() as tmp, VirtualDevice(Path(tmp) / "d") as dev, \
            VirtualIO(dev.io_addr) as io:
        time.sleep(IDLE_S)
        out["vdev.heap_peak_kib"] = io.status()["heap_peak_alloc"] / 1024
    bare = subprocess.run([micropython(), "-c", "import gc; gc.collect(); print(gc.mem_alloc())"],
                          capture_output=True, text=True, check=True).stdout
    out["vdev.heap_baseline_kib"] = int(bare) / 1024


def qstr_pools(text: str) -> list[tuple[int, int]]:
    """(pools, names) of every `micropython.qstr_info()` line in `text`."""
    found = [(int(p), int(n)) for p, n in re.findall(r"n_pool=(\d+), n_qstr=(\d+)", text)]
    if not found:
        raise RuntimeError(f"no qstr_info line in {text[-200:]!r}")
    return found


def first_pool_entries(reports: list[tuple[int, int]]) -> int:
    """The first RAM pool's size: the names held when interning one more opened a second."""
    for (pools, names), (next_pools, _) in zip(reports, reports[1:], strict=False):
        if pools == 1 and next_pools == 2:
            return names
    raise RuntimeError(f"no second qstr pool opened in {reports[:3]}...")


def qstr_headroom(first_pool: int, pools: int, names: int) -> int:
    """Names left before the next pool: MicroPython doubles each new pool (py/qstr.c), so
    `pools` pools hold first_pool * (2**pools - 1) names."""
    return first_pool * (2 ** pools - 1) - names


def interpreter_first_pool() -> int:
    """The first RAM qstr pool's size on this interpreter, measured."""
    bare = subprocess.run([micropython(), "-c", _FIRST_POOL_PROGRAM], capture_output=True,
                          text=True, check=True).stdout
    return first_pool_entries(qstr_pools(bare))


def _qstr_figures(out: dict[str, Outcome]) -> None:
    first = interpreter_first_pool()
    with tempfile.TemporaryDirectory() as tmp, VirtualDevice(Path(tmp) / "d") as dev:
        time.sleep(IDLE_S)
        pools, names = qstr_pools(mpremote(dev.pty, "exec", _QSTR_INFO, timeout=60))[-1]
    out["vdev.qstr_count"] = names
    out["vdev.qstr_headroom"] = qstr_headroom(first, pools, names)
