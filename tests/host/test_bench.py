"""`doorctl bench`: discovery, selection, JSON output, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from host_tools.benchmarks import Benchmark, discover, select

DOORCTL = str(Path(sys.executable).with_name("doorctl"))


def _bench(name: str, figures: dict[str, str]) -> Benchmark:
    mod = ModuleType(f"host_tools.benchmarks.{name}")
    mod.FIGURES = figures  # type: ignore[attr-defined]
    mod.run = lambda names: {n: 1.0 for n in names}  # type: ignore[attr-defined]
    return Benchmark(mod)


def test_discovery_finds_the_repo_benchmarks() -> None:
    figures = {f for b in discover() for f in b.figures}
    assert {"vdev.boot_s", "vdev.heap_peak_kib"} <= figures


def test_selection_by_name_and_prefix() -> None:
    a = _bench("a", {"cache.x": "", "cache.y": ""})
    b = _bench("b", {"vdev.boot_s": "", "vdev.heap": ""})
    assert select([a, b], ["cache."]) == {a: {"cache.x", "cache.y"}}
    assert select([a, b], ["vdev"]) == {b: {"vdev.boot_s", "vdev.heap"}}
    assert select([a, b], ["vdev.boot_s", "cache.y"]) == {a: {"cache.y"}, b: {"vdev.boot_s"}}
    assert set(select([a, b], [])) == {a, b}
    with pytest.raises(KeyError):
        select([a, b], ["cach"])


def test_json_is_one_object_of_numbers() -> None:
    proc = subprocess.run([DOORCTL, "bench", "vdev.heap_baseline_kib", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert set(figures) >= {"vdev.heap_baseline_kib"}
    assert all(isinstance(v, (int, float)) for v in figures.values())


def test_unknown_figure_is_a_usage_error() -> None:
    proc = subprocess.run([DOORCTL, "bench", "no.such.figure"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown figure no.such.figure" in proc.stderr
