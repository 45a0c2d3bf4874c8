"""Every benchmark runs to the end at a small size (its SMOKE settings): a benchmark that
crashes fails here, not in the next regeneration of BENCHMARKS.md. Nothing is timed: the
figures only have to be there, as finite numbers.
"""

from __future__ import annotations

import shutil

import pytest

from host_tools.benchmarks import Benchmark, discover
from host_tools.image import source

SKIPPED: set[str] = set()
# Figures known not to be measurable yet, each with where the reason is written. They must
# fail (strictly: once one is measured, remove it here), and nothing else may.
KNOWN_FAILING: dict[str, str] = {}
MCU_TOOLS = source.vendored_tarball() is not None \
    and all(shutil.which(t) for t in ("arm-none-eabi-gcc", "qemu-system-arm"))
BENCHMARKS = {b.name: b for b in discover() if b.name not in SKIPPED}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_runs_to_the_end_at_a_small_size(name: str) -> None:
    if name == "mcu" and not MCU_TOOLS:
        pytest.skip("no MicroPython source, Arm toolchain or qemu-system-arm here")
    if name == "image" and source.vendored_tarball() is None:
        pytest.skip("no MicroPython source here for the unix32 image")
    bench: Benchmark = BENCHMARKS[name]
    for attr in bench.smoke:
        assert hasattr(bench.module, attr), f"SMOKE names {attr}, which {name} does not have"
    measured, failed = bench.run(set(bench.figures), bench.smoke)
    known = {f for f in bench.figures if f in KNOWN_FAILING}
    assert set(failed) == known, failed
    assert set(measured) | known == set(bench.figures)
