"""Offline whitelist cache at 100,000 cards on the MicroPython unix port (64 KiB heap, littlefs
on the flash simulator), beside two baselines: a JSON dict in RAM and one littlefs file per card.
The 100k snapshot and the 1k delta are built on the host with the same code the door runs."""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import subprocess
import tempfile
from pathlib import Path

from host_tools import cache_build
from host_tools.benchmarks import Outcome, failing
from host_tools.mpy_build import build_device_tree, compile_file
from host_tools.paths import micropython, micropython_env
from offline_cache import fmt
from offline_cache.cache import Cache
from wire.common import SITE_TZ_MIN

SCRIPT = Path(__file__).with_name("device") / "cache_bench.py"
KEY = b"bench-cache-key-0123456789abcdef"
SITE = 1
DAY = 20000
N_CARDS = 100_000
N_PROBES = 1000
N_FILES = 2000
HEAPS_KIB = range(16, 68, 4)  # tried by cache.heap_peak_kib, smallest first
SMOKE = {"N_CARDS": 3000, "N_FILES": 50, "HEAPS_KIB": (16, 64)}

FIGURES = {
    "cache.bytes_100k": "cache file for 100,000 cards, bytes",
    "cache.lookup_100k_ms": f"decision (lookup) among 100,000 cards, median of {N_PROBES} (half unknown), "
                            "littlefs on the flash simulator, MicroPython 64K heap, ms",
    "cache.lookup_100k_worst_ms": "same, worst single decision, ms",
    "cache.lookup_flash_bytes": "flash bytes read per decision",
    "cache.heap_peak_kib": "smallest MicroPython heap (4 KiB steps) in which the whole 100k run passes: "
                           "littlefs, flash simulator, snapshot load, lookups, delta, merge, reopen, KiB",
    "cache.ram_100k_bytes": "live heap of an open 100k cache: RAM index, read buffer, schedules, bytes",
    "cache.code_ram_bytes": "live heap taken by importing the cache code (.mpy), bytes",
    "cache.delta_1k_apply_s": "receive and apply a 1,000-change delta (revocation effective), s",
    "cache.merge_100k_s": "merge a 1,000-change overlay into the 100k sorted file (idle time), s",
    "cache.snapshot_100k_load_s": (
        "write a received 100k snapshot to littlefs, verify tag and order, install, s"),
    "cache.snapshot_100k_verify_s": "of which: verify and index the written file, s",
    "cache.baseline_json_lookup_ms": "baseline: 100k cards as a JSON dict in RAM, lookup, ms "
                                     "(measured with the heap it needs: it does not fit 64K)",
    "cache.baseline_json_fits_64k": "baseline: 1 if json.load of the 100k dict succeeds in a 64K heap, "
                                    "else 0 (MemoryError)",
    "cache.baseline_json_heap_kib": "baseline: live heap of the loaded JSON dict (large heap), KiB",
    "cache.baseline_files_lookup_ms": (
        f"baseline: one littlefs file per card, open+read among {N_FILES} files, ms"),
    "cache.baseline_files_bytes_100k": "baseline: flash one file per card would take for 100k cards "
                                       f"(blocks used by {N_FILES}, scaled), bytes",
}


def card_ref(i: int) -> bytes:
    return fmt.hmac_sha256(KEY, b"card%d" % i)[:8]


def make_inputs(folder: Path) -> None:
    rng = random.Random(7)
    refs = sorted(card_ref(i) for i in range(N_CARDS))
    sched = {1: [(0x1F, 7 * 60, 22 * 60)], 2: [(0x7F, 0, 1440)]}

    def rec(ref: bytes, status: int = fmt.ACTIVE) -> bytes:
        h = ref[7]
        return cache_build.pack_record(ref, status, h == 0, h % 3, DAY - 100, DAY + 265, 0xFFFF)

    with open(folder / "snap.bin", "wb") as f:
        cache_build.write(f, KEY, fmt.KIND_SNAPSHOT, 1, 0, SITE, 0xFFFF, SITE_TZ_MIN, N_CARDS,
                          (rec(r) for r in refs), sched, [DAY + 30])
    (folder / "copy.bin").write_bytes((folder / "snap.bin").read_bytes())
    present = rng.sample(refs, N_PROBES // 2 + N_FILES)
    absent = [hashlib.sha256(b"x%d" % i).digest()[:8] for i in range(N_PROBES // 2)]
    probes = present[:N_PROBES // 2] + absent
    (folder / "probes.bin").write_bytes(b"".join(probes + present[N_PROBES // 2:]))
    changes = [rec(r, fmt.LOST) for r in present[:500]]
    changes += [rec(hashlib.sha256(b"new%d" % i).digest()[:8]) for i in range(500)]
    (folder / "delta.bin").write_bytes(
        cache_build.build(KEY, fmt.KIND_DELTA, 2, 1, SITE, 0xFFFF, SITE_TZ_MIN, changes, sched, [DAY + 30]))
    cards = {r.hex(): [0, h % 3, DAY - 100, DAY + 265, 0xFFFF, h == 0] for r in refs for h in (r[7],)}
    (folder / "cards.json").write_text(json.dumps(cards))


def _mpy(args: list[str], heap: str, folder: Path) -> dict[str, list[str]]:
    # The script runs compiled, as device code does: compiled from source in the heap it
    # measures, its compiler's leftovers fragmented the heap the cache is given.
    script = folder / "bench_script" / f"{SCRIPT.stem}.mpy"
    if not script.exists():
        compile_file(SCRIPT, script)
    env = micropython_env(script.parent, build_device_tree()[0].parents[1])
    proc = subprocess.run([micropython(), "-X", f"heapsize={heap}", "-m", SCRIPT.stem, *args],
                          env=env, cwd=folder, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"cache benchmark failed: {proc.stdout[-500:]}{proc.stderr[-500:]}")
    out: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        p = line.split()
        if p and p[0] == "lookup_us":
            out.setdefault("lookup_us", []).append(p[1])
        elif p:
            out[p[0]] = p[1:]
    return out


def _smallest_heap(tmp: str, folder: Path) -> float:
    for kib in HEAPS_KIB:
        try:
            _mpy(["cache", tmp], f"{kib}K", folder)
            return float(kib)
        except RuntimeError:
            continue
    raise RuntimeError("the cache run does not pass in a 64K heap")


MAIN = [n for n in FIGURES if "baseline" not in n]
QUICK_FIGURES = [n for n in MAIN if n not in ("cache.heap_peak_kib", "cache.ram_100k_bytes",
                                              "cache.code_ram_bytes")]
RAM = ["cache.ram_100k_bytes", "cache.code_ram_bytes"]
JSON = [n for n in FIGURES if "baseline_json" in n]
FILES = [n for n in FIGURES if "baseline_files" in n]


def _main(tmp: str, folder: Path, names: set[str], out: dict[str, Outcome]) -> None:
    r = _mpy(["cache", tmp], "64K", folder)
    if any(r[f"revoked_after_{step}"] != ["lost"] for step in ("delta", "merge", "reopen")):
        raise RuntimeError("a revoked card was not refused after the delta")
    out["cache.bytes_100k"] = float(r["bytes"][0])
    us = [float(t) for t in r["lookup_us"]]
    out["cache.lookup_100k_ms"] = statistics.median(us) / 1000
    out["cache.lookup_100k_worst_ms"] = max(us) / 1000
    out["cache.lookup_flash_bytes"] = float(r["lookup_flash_bytes"][0])
    out["cache.delta_1k_apply_s"] = float(r["delta_apply_s"][0])
    out["cache.merge_100k_s"] = float(r["merge_s"][0])
    out["cache.snapshot_100k_load_s"] = float(r["snapshot_load_s"][0])
    out["cache.snapshot_100k_verify_s"] = float(r["snapshot_verify_s"][0])
    with failing(out, *RAM):
        if names & set(RAM):
            (folder / "wl").mkdir()
            Cache(str(folder / "wl"), KEY, SITE).apply(str(folder / "copy.bin"))
            ram = _mpy(["ram", tmp], "64K", folder)
            out["cache.ram_100k_bytes"] = float(ram["ram_open"][0])
            out["cache.code_ram_bytes"] = float(ram["ram_code"][0])
    with failing(out, "cache.heap_peak_kib"):
        if "cache.heap_peak_kib" in names:
            out["cache.heap_peak_kib"] = _smallest_heap(tmp, folder)


def run(names: set[str]) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_inputs(folder)
        with failing(out, *MAIN):
            if names & set(MAIN):
                _main(tmp, folder, names, out)
        with failing(out, *JSON):
            if names & set(JSON):
                r = _mpy(["json", tmp], "64K", folder)
                out["cache.baseline_json_fits_64k"] = 0.0 if "json_memoryerror" in r else 1.0
                big = _mpy(["json", tmp], "512M", folder)
                out["cache.baseline_json_heap_kib"] = float(big["json_heap_kib"][0])
                out["cache.baseline_json_lookup_ms"] = float(big["json_lookup_ms"][0])
        with failing(out, *FILES):
            if names & set(FILES):
                r = _mpy(["files", tmp, str(N_FILES)], "64K", folder)
                made = int(r["files_made"][0])
                out["cache.baseline_files_lookup_ms"] = float(r["files_lookup_ms"][0])
                out["cache.baseline_files_bytes_100k"] = (
                    float(r["files_blocks_used"][0]) * 4096 * N_CARDS / made)
    return {k: v for k, v in out.items() if k in names}


if __name__ == "__main__":
    for k, v in run(set(FIGURES)).items():
        print(f"{k} {v:.4g}")
