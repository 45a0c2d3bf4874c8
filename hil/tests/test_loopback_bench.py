"""The bench driver proven without hardware: the end-to-end suite runs with a rig file of kind
"bench" against the loopback bench (hil/loopback.py), where every bench interface is real (a
serial console for mpremote, the rig I/O board's firmware on a serial port, the reader UART on a
serial port, PC/SC readers by name, a card changer) and only the far ends are virtual."""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.loopback import LoopbackBench
from hil.rig import RigConfig
from host_tools.paths import REPO_ROOT

# The suite's tests that must pass on a bench (all of them: the loopback's broker is ours).
MUST_PASS = {
    "test_each_card_class_is_granted_or_refused_with_its_reason",
    "test_a_card_reported_lost_at_the_platform_is_refused",
    "test_rex_opens_and_the_door_relocks_when_it_closes",
    "test_forced_and_held_open_alarms_reach_the_platform",
    "test_swipes_while_offline_are_drained_after_reconnect",
    "test_a_power_cut_during_a_swipe_loses_no_decision",
    "test_a_reboot_keeps_the_whitelist_and_its_updates",
    "test_patrol_report_on_demand",
}


@pytest.fixture()
def bench(tmp_path: Path, pcscd: None, rig_config: RigConfig) -> Iterator[LoopbackBench]:
    if rig_config.kind == "bench":
        pytest.skip("this run is on a bench already: the loopback bench proves the driver in CI")
    b = LoopbackBench(tmp_path / "loopback")
    yield b
    b.close()


@pytest.mark.timeout(900)
def test_the_suite_passes_on_the_loopback_bench(bench: LoopbackBench, tmp_path: Path,
                                                broker_name: str) -> None:
    assert RigConfig.load(bench.rig).kind == "bench"
    junit, report = tmp_path / "junit.xml", tmp_path / "hil-report.md"
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "pytest", "hil/test_door_e2e.py", "-p",
                          "no:cacheprovider", "--rig", str(bench.rig), "--broker", broker_name,
                          "--junitxml", str(junit), "--hil-report", str(report), "-q"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    took = time.monotonic() - t0
    assert junit.exists(), run.stdout[-3000:] + run.stderr[-2000:]
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    outcome = {name: ("passed" if len(c) == 0 else c[0].tag) for name, c in cases.items()}
    assert {n for n, o in outcome.items() if o == "passed"} >= MUST_PASS, \
        f"{outcome}\n{run.stdout[-4000:]}"
    assert run.returncode == 0, run.stdout[-4000:]
    # The bench path really ran: the card changer swapped the five cards over two readers, and
    # the timing table has the bench's figures (the I/O board's clock).
    assert {role for role, _ in bench.changer.placed} == {"resident", "master", "lost", "clone",
                                                          "stranger"}
    table = report.read_text()
    for timing in ("card_to_relay", "card_to_refusal", "rex_to_relay", "forced_open_to_platform",
                   "offline_backlog_drained"):
        assert f"| {timing} |" in table, table
    print(f"\nloopback bench: {len(cases)} tests in {took:.0f} s\n{table}")
