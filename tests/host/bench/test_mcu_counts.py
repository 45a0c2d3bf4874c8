"""Instruction-count benchmarks on the bare-metal image: they repeat exactly, and the CI check
holds them to BENCHMARKS.md."""

from __future__ import annotations

import shutil

import pytest

from host_tools.benchmarks import discover, mcu
from host_tools.image import source

HAVE_TOOLS = source.vendored_tarball() is not None \
    and all(shutil.which(t) for t in ("arm-none-eabi-gcc", "qemu-system-arm"))
needs_image = pytest.mark.skipif(not HAVE_TOOLS, reason="no MicroPython source, Arm toolchain "
                                 "or qemu-system-arm here")


def test_registered_with_the_figures_the_issue_names() -> None:
    bench = {b.name: b for b in discover()}["mcu"]
    for name in ("mcu.insn_decision_100k", "mcu.insn_decision_unknown_100k", "mcu.insn_cmac64",
                 "mcu.insn_ev2_session", "mcu.insn_door_event", "mcu.flash_text_bytes"):
        assert name in bench.figures


def test_parse_reads_figure_lines_only() -> None:
    out = "booting\nfig mcu.insn_decision 1234\nfig mcu.section.decision.lookup 99\nnoise 1 2\n"
    assert mcu.parse(out) == {"mcu.insn_decision_100k": 1234.0,
                              "mcu.section.decision.lookup": 99.0}


def test_growth_over_five_percent_fails_naming_the_figure() -> None:
    failures, _ = mcu.check_growth({"mcu.insn_cmac64": 106_000.0, "mcu.insn_door_event": 1000.0},
                                   {"mcu.insn_cmac64": "100,000", "mcu.insn_door_event": "1,000"})
    assert len(failures) == 1 and failures[0].startswith("mcu.insn_cmac64 grew 6.0 %")


def test_growth_within_five_percent_and_shrinking_pass() -> None:
    failures, notes = mcu.check_growth(
        {"mcu.insn_cmac64": 104_999.0, "mcu.insn_door_event": 10.0},
        {"mcu.insn_cmac64": "100,000", "mcu.insn_door_event": "1,000"})
    assert failures == [] and len(notes) == 2


def test_a_count_over_its_goal_fails_even_within_five_percent_of_the_table() -> None:
    failures, _ = mcu.check_growth(
        {"mcu.insn_decision_100k": 50_001.0, "mcu.insn_ev2_session": 1_000_000.0},
        {"mcu.insn_decision_100k": "49,000", "mcu.insn_ev2_session": "990,000"})
    assert failures == ["mcu.insn_decision_100k is 50,001, over its goal of 50,000 (issue 15)"]
    failures, _ = mcu.check_growth({"mcu.insn_ev2_session": 1_000_001.0}, {})
    assert len(failures) == 1 and failures[0].startswith("mcu.insn_ev2_session is 1,000,001")


def test_figures_not_in_the_table_are_reported_only() -> None:
    failures, notes = mcu.check_growth({"mcu.section.decision.lookup": 5.0,
                                        "mcu.decision_100k_ms_240mhz": 9.0}, {})
    assert failures == []
    assert notes == ["mcu.section.decision.lookup: 5 (not in the table yet)"]


@needs_image
def test_two_runs_give_identical_counts() -> None:
    first = mcu.measure("decision", "300")
    assert first["mcu.insn_decision_100k"] > 1000
    assert mcu.measure("decision", "300") == first
    door = mcu.measure("door_event")
    assert door["mcu.insn_door_event"] > 0
    assert mcu.measure("door_event") == door
