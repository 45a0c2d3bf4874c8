"""The long torture run (docs/torture.md): power cuts, broker faults, TCP drops, platform kills,
a journal overflowing under outages and hostile messages on every door topic, over a virtual
door and a small-ring door with mosquitto and the platform; then the invariant check. The
issue's size is at least 1,000 cuts, 100 broker faults and 10,000 hostile messages: set CUTS,
BROKER_FAULTS and HOSTILE (the run stops once all are reached, or after MINUTES)."""

from __future__ import annotations

import sys

SEED = 2026
MINUTES = 240.0  # the limit; the run ends earlier once CUTS, BROKER_FAULTS and HOSTILE are reached
CUTS = 1000
BROKER_FAULTS = 100
HOSTILE = 10_000
OUTAGE_S = 15.0
SMOKE = {"MINUTES": 0.1, "CUTS": 0, "BROKER_FAULTS": 0, "HOSTILE": 0, "OUTAGE_S": 2.0}

FIGURES = {
    "torture.cuts": "torture run: power cuts (kill -9 of a door, or torn at a flash write)",
    "torture.broker_faults": "torture run: broker faults (SIGSTOP, kill -9 and restart)",
    "torture.hostile": "torture run: hostile messages published on the doors' topics",
    "torture.events": "torture run: events at the platform, both doors",
    "torture.gap_events": "torture run: events an overflowing door reported lost (exact gaps)",
    "torture.lost": "torture run: events neither at the platform nor in a reported gap (goal 0)",
    "torture.duplicated": "torture run: events stored twice (goal 0)",
    "torture.stalls": "torture run: a valid card refused past the grace after a fault, or a "
                      "door not delivering at the end (goal 0)",
    "torture.minutes": "torture run: duration, faults and final delivery, min",
}


def run(names: set[str]) -> dict[str, float]:
    # The torture run (host_tools/torture) is imported on use: the CLI loads it only to measure.
    from host_tools.torture.rig import Settings
    from host_tools.torture.rig import run as torture_run

    settings = Settings(seed=SEED, minutes=MINUTES, outage_s=OUTAGE_S, cuts=CUTS,
                        broker_faults=BROKER_FAULTS, hostile=HOSTILE)
    report = torture_run(settings)
    if not report.doors:  # it did not get as far as the verdict
        raise RuntimeError("; ".join(report.errors) or "the torture run ended without a verdict")
    if not report.ok:
        print(report.failure(), file=sys.stderr)
    return {
        "torture.cuts": report.cuts,
        "torture.broker_faults": report.broker_faults,
        "torture.hostile": report.hostile_sent,
        "torture.events": report.events,
        "torture.gap_events": sum(d.gap_events for d in report.doors),
        "torture.lost": report.lost,
        "torture.duplicated": report.duplicated,
        "torture.stalls": len(report.stalls),
        "torture.minutes": report.seconds / 60,
    }
