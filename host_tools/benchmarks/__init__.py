"""Benchmarks: each module here defines FIGURES and run(); `doorctl bench` runs them.

    FIGURES: dict[str, str]                       # "area.figure" -> what it measures, unit
    def run(names: set[str]) -> dict[str, float]  # measures at least the figures named

A module may also define
    SMOKE: {module attribute: value}     # small enough for the test suite's smoke run
                                         # (tests/host/bench/test_every_benchmark_runs.py): proves it runs
    QUICK_FIGURES: list[str]             # figures `doorctl bench --quick` measures ...
    QUICK: {module attribute: value}     # ... with these settings (a quick run, same figures)
    NOISE: {figure: (ratio, slack)}      # noise bands where drift.band's default is wrong

A figure that cannot be measured fails alone: `run` may put the exception in its place
(`failing(out, ...)` does that for a section of the run), and a `run` that raises fails
every figure it was asked for. The other figures, of this module and the others, are
still measured.

A device figure is measured on the MicroPython unix port (the virtual device or a
MicroPython process), beside a baseline measured in the same run, so a figure always comes
with something to compare it with on the same machine.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from types import ModuleType
from typing import cast


class BenchmarkError(Exception):
    """A benchmark module is malformed or returned something that is not a figure."""


Outcome = float | Exception  # a figure's value, or why it could not be measured


@contextmanager
def failing(out: MutableMapping[str, Outcome], *figures: str) -> Iterator[None]:
    """Run one section of a benchmark: when it raises, each of `figures` it did not measure
    yet fails with that error, and the benchmark goes on with its other sections."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - the reason is the figure's outcome
        for name in figures:
            out.setdefault(name, e)


def reason(e: Exception) -> str:
    """One line saying why a figure failed."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class Benchmark:
    def __init__(self, module: ModuleType) -> None:
        self.name = module.__name__.rsplit(".", 1)[-1]
        figures = module.FIGURES
        if not isinstance(figures, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in figures.items()):
            raise BenchmarkError(f"benchmark {self.name}: FIGURES must map names to descriptions")
        self.figures: dict[str, str] = dict(figures)
        self.module = module
        self.smoke: dict[str, object] = dict(getattr(module, "SMOKE", {}))
        self.quick_figures: set[str] = set(getattr(module, "QUICK_FIGURES", ()))
        self.quick: dict[str, object] = dict(getattr(module, "QUICK", {}))
        self.noise: dict[str, tuple[float, float]] = dict(getattr(module, "NOISE", {}))
        unknown = (self.quick_figures | set(self.noise)) - set(self.figures)
        if unknown:
            raise BenchmarkError(f"benchmark {self.name}: QUICK_FIGURES or NOISE name "
                                 f"{', '.join(sorted(unknown))}, not its figures")
        self._run = cast(Callable[[set[str]], dict[str, Outcome]], module.run)

    def run(self, names: set[str], settings: dict[str, object] | None = None
            ) -> tuple[dict[str, float], dict[str, str]]:
        """Measure `names`, the module's attributes set to `settings` meanwhile (SMOKE,
        QUICK): (figures measured, as finite numbers; figure -> why it failed).

        Every name is in exactly one of the two; nothing raises (but KeyboardInterrupt)."""
        saved = {k: getattr(self.module, k) for k in settings or {}}
        try:
            for k, v in (settings or {}).items():
                setattr(self.module, k, v)
            got: dict[str, Outcome] = dict(self._run(set(names)))
        except Exception as e:  # noqa: BLE001 - every figure asked for fails with it
            got = dict.fromkeys(names, e)
        finally:
            for k, v in saved.items():
                setattr(self.module, k, v)
        out: dict[str, float] = {}
        errors: dict[str, str] = {}
        for name in sorted(names):
            value = got.get(name)
            if isinstance(value, Exception):
                errors[name] = reason(value)
            elif name not in got:
                errors[name] = f"benchmark {self.name} did not measure it"
            elif isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                errors[name] = f"{value!r} is not a number"
            else:
                out[name] = float(value)
        return out, errors

    def __repr__(self) -> str:
        return f"Benchmark({self.name})"


def discover(package: str = __name__,
             on_error: Callable[[str, Exception], None] | None = None) -> list[Benchmark]:
    """Every benchmark module in `package`, by module name.

    A module that fails to import is reported through `on_error` (module name, error) and
    left out, so one broken benchmark does not stop the others; without `on_error` it raises.
    """
    pkg = importlib.import_module(package)
    found: list[Benchmark] = []
    seen: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.ispkg or info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{package}.{info.name}")
            if not (hasattr(module, "FIGURES") and hasattr(module, "run")):
                continue
            bench = Benchmark(module)
            for fig in bench.figures:
                if fig in seen:
                    raise BenchmarkError(f"figure {fig} is defined by both {seen[fig]} "
                                         f"and {bench.name}")
                seen[fig] = bench.name
        except Exception as e:
            if on_error is None:
                raise
            on_error(info.name, e)
            continue
        found.append(bench)
    return found


def matches(figure: str, pattern: str) -> bool:
    """`pattern` is a figure's name, a prefix ending at a dot (`cache.` or `cache`), or a
    family of figures named alike (`image.soak` for `image.soak_decisions`, `image.soak_cuts`)."""
    if not pattern or figure == pattern:
        return True
    prefix = pattern if pattern.endswith(".") else pattern + "."
    return figure.startswith(prefix) or (not pattern.endswith(".") and "." in pattern
                                         and figure.startswith(pattern + "_"))


def select(benchmarks: list[Benchmark], patterns: list[str]) -> dict[Benchmark, set[str]]:
    """Figures matching exact names or prefixes (`cache.`, `vdev`); all when no pattern.

    Raises KeyError naming the patterns that match nothing.
    """
    blank = [repr(p) for p in patterns if not p.strip()]
    if blank:  # an empty name is no figure, not every figure (no names at all is)
        raise KeyError(", ".join(blank))
    chosen: dict[Benchmark, set[str]] = {}
    unknown = set(patterns)
    for b in benchmarks:
        for fig in b.figures:
            for p in patterns or [""]:
                if matches(fig, p):
                    chosen.setdefault(b, set()).add(fig)
                    unknown.discard(p)
    if unknown:
        raise KeyError(", ".join(sorted(unknown)))
    return chosen
