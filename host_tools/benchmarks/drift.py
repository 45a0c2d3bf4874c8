"""Noise bands: whether a figure measured now moved beyond what run-to-run noise explains,
against the value BENCHMARKS.md holds for it (`doorctl bench --quick --compare FILE`).

A band is a ratio and an absolute slack: `now` moved when it is outside [was / ratio,
was × ratio] and also differs from `was` by more than the slack. Counts and sizes barely
move; timings on a shared machine move by tens of percent; a 95th percentile or a worst
case by more; a figure of a few device-clock milliseconds by whole milliseconds. A module
sets its own where the default is wrong for a figure (NOISE = {figure: (ratio, slack)}).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Band = tuple[float, float]  # (ratio, absolute slack in the figure's unit)

EXACT: Band = (1.05, 0.0)
TIMING: Band = (1.5, 0.0)
TAIL: Band = (3.0, 0.0)
COUNT_WORDS = ("bytes", "erases", "_kib", "files", "fits_64k", "blocks", "insn", ".section.")


def band(name: str, overrides: dict[str, Band] | None = None) -> Band:
    """The noise band of figure `name`."""
    if overrides and name in overrides:
        return overrides[name]
    if "_p95" in name or "_worst" in name:
        return TAIL
    if any(w in name for w in COUNT_WORDS) and not name.endswith(("_ms", "_s", "_us")):
        return EXACT
    return TIMING


def table_number(cell: str) -> float | None:
    """The number in a table's value cell (`1,935`, `0.052`), or None (`failed`, text)."""
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return None


@dataclass(frozen=True)
class Drift:
    name: str
    was: float
    now: float
    band: Band

    @property
    def moved(self) -> bool:
        ratio, slack = self.band
        if abs(self.now - self.was) <= slack:
            return False
        if self.was == 0 or self.now == 0:
            return self.now != self.was
        return not (self.was / ratio <= self.now <= self.was * ratio)

    def line(self, commit: str) -> str:
        change = f"x{self.now / self.was:.2f}" if self.was else (
            "same" if self.now == self.was else "was 0")
        ratio, slack = self.band
        noise = f"±x{ratio:g}" + (f" or {slack:g}" if slack else "")
        verdict = "MOVED" if self.moved else "ok"
        return (f"{verdict:5}  {self.name}: {self.now:.4g} now, {self.was:.4g} in the table "
                f"(at {commit or 'unknown commit'}), {change}, noise band {noise}")


def compare(measured: dict[str, float], table: Mapping[str, tuple[str, ...]],
            overrides: dict[str, Band]) -> tuple[list[Drift], list[str]]:
    """(figures with a table value, compared; figures the table has no number for)."""
    drifts, missing = [], []
    for name in sorted(measured):
        was = table_number(table[name][0]) if name in table else None
        if was is None:
            missing.append(name)
            continue
        drifts.append(Drift(name, was, measured[name], band(name, overrides)))
    return drifts, missing
