"""The PN532 round-trip figures are measured on one core (a hand-over across two cores costs the
scheduler's wake-up, which made the figure bimodal); the pinning ends with the measurement."""

from __future__ import annotations

import os

import pytest

from host_tools.benchmarks.pn532 import one_core


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_one_core_pins_the_process_and_restores_its_cpus() -> None:
    before = os.sched_getaffinity(0)
    with one_core():
        assert os.sched_getaffinity(0) == {min(before)}
    assert os.sched_getaffinity(0) == before


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_the_cpus_come_back_when_the_measurement_fails() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(RuntimeError), one_core():
        raise RuntimeError("the emulator did not answer")
    assert os.sched_getaffinity(0) == before
