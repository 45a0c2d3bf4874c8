"""The torture run (docs/torture.md): its schedule is the seed's, its checker fails on what it
must catch, and a short run over a real virtual door, a small-ring door, mosquitto and the
platform ends with nothing lost, nothing duplicated, no stall."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from host_tools.torture.check import verdict
from host_tools.torture.plan import WEIGHTS, make_plan
from host_tools.torture.rig import Settings, run
from reference_platform.store import Store
from wire.codes import GAP as CODE_GAP

D = "t.b1.d1"
SHORT_SEEDS = (2,)  # the suite's fixed seed(s)


def test_a_seed_is_its_schedule() -> None:
    assert make_plan(5, 300) == make_plan(5, 300)
    assert make_plan(5, 300) != make_plan(6, 300)
    kinds = {a.kind for a in make_plan(5, 300)}
    assert kinds == set(WEIGHTS)  # every fault is drawn in a run of some length
    for kind in ("cut", "ring_cut"):  # torn flash writes too, on both doors
        assert any(a.kind == kind and a.arg for a in make_plan(5, 300))


def row(seq: int, boot: int, i: int, code: int = 1) -> tuple[int, int, int, int, int, int, int, str]:
    return (seq, code, boot, 1767225600 + i, 0, 1, i & 0xFFFF, struct.pack("<I", i).hex())


def gap(seq: int, first: int, last: int) -> tuple[int, int, int, int, int, int, int, str]:
    return (seq, CODE_GAP, 0, 0, 0, 0, 0, struct.pack("<II", first, last).hex())


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "p.db"))


def test_the_checker_passes_a_complete_delivery_with_an_exact_gap(store: Store) -> None:
    store.store_events(D, [row(s, 1, s) for s in range(5, 9)] + [gap(9, 1, 4)])
    v = verdict(store, D, newest=9, oldest=5, numbered=True)
    assert v.problems == [] and v.events == 5 and v.gap_events == 4 and v.lost == 0


def test_the_checker_finds_lost_duplicated_and_reordered_events(store: Store) -> None:
    store.store_events(D, [row(1, 2, 1), row(2, 2, 1), row(3, 1, 9), row(5, 2, 3)])
    v = verdict(store, D, newest=6, oldest=1, numbered=True)
    assert v.lost == 2  # 4 and 6: neither stored nor reported
    assert v.duplicated == 1  # boot 2's event 1 twice
    assert v.out_of_order == 1  # boot 1 after boot 2
    assert len(v.problems) == 4  # and the platform's ack stops at 3, short of 6


def test_the_checker_refuses_a_gap_over_events_the_door_still_holds(store: Store) -> None:
    store.store_events(D, [row(s, 1, s) for s in range(1, 4)] + [gap(6, 4, 5)])
    v = verdict(store, D, newest=6, oldest=2)  # the door still holds 2..6: 4 and 5 not lost
    assert any("still holds" in p for p in v.problems)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", SHORT_SEEDS)
def test_a_short_torture_run_loses_nothing(tmp_path: Path, seed: int) -> None:
    report = run(Settings(seed=seed, minutes=1.5, drain_s=150), tmp_path / "run")
    assert report.ok, report.failure()
    assert report.cuts >= 5 and report.broker_faults >= 1 and report.hostile_sent >= 100
    assert report.counts.get("outage", 0) >= 1
    door, ring = report.doors
    assert door.events > 10 and door.gap_events == 0  # its 50,000-event ring never filled
    assert ring.gap_events > 0  # the small ring overflowed and said so, exactly
    assert report.lost == report.duplicated == 0 and report.stalls == []


@pytest.mark.timeout(300)
def test_doorctl_torture_runs_from_anywhere(tmp_path: Path) -> None:
    """The installed command (not pytest's path) finds the repository's board package."""
    import subprocess
    import sys

    doorctl = str(Path(sys.executable).with_name("doorctl"))
    r = subprocess.run([doorctl, "torture", "--seed", "4", "--minutes", "0.05", "-q",
                        "--work", str(tmp_path / "w")], cwd="/", capture_output=True,
                       text=True, timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "seed 4:" in r.stdout and " 0 lost, 0 duplicated, 0 stalls" in r.stdout
