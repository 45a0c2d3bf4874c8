"""Benchmarks: each module defines FIGURES (name -> description) and run(names) -> figures.

A figure that is a device figure is measured on the MicroPython unix port (the virtual
device or a MicroPython process), beside a baseline measured in the same run.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType
from typing import cast


class Benchmark:
    def __init__(self, module: ModuleType) -> None:
        self.name = module.__name__.rsplit(".", 1)[-1]
        self.figures: dict[str, str] = dict(module.FIGURES)
        self._run = cast(Callable[[set[str]], dict[str, float]], module.run)

    def run(self, names: set[str]) -> dict[str, float]:
        return self._run(names)


def discover(package: str = __name__) -> list[Benchmark]:
    pkg = importlib.import_module(package)
    found = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package}.{info.name}")
        if hasattr(module, "FIGURES") and hasattr(module, "run"):
            found.append(Benchmark(module))
    return found


def select(benchmarks: list[Benchmark], patterns: list[str]) -> dict[Benchmark, set[str]]:
    """Figures matching exact names or prefixes (`cache.`, `vdev`); all when no pattern."""
    chosen: dict[Benchmark, set[str]] = {}
    unknown = set(patterns)
    for b in benchmarks:
        for fig in b.figures:
            for p in patterns or [""]:
                if fig == p or fig.startswith(p if p.endswith(".") or not p else p + ".") or not p:
                    chosen.setdefault(b, set()).add(fig)
                    unknown.discard(p)
    if unknown:
        raise KeyError(", ".join(sorted(unknown)))
    return chosen
