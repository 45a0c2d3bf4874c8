"""The HIL rig's timing table on the virtual rig: cards on vpcd behind pcscd, relayed by the PN532
emulator to the virtual door, with mosquitto and the platform. Baseline in the same run: a REX
press to the relay (the same door and I/O path, no card). The rig measures in a process of its
own (hil/figures.py): the CLI does not import the test rig."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

from host_tools.paths import REPO_ROOT

N = 10
BACKLOG = 2000
TIMEOUT_S = 1800  # the rig's run at most, s
SMOKE = {"N": 1, "BACKLOG": 20}
FIGURES = {
    "hil.card_to_relay_ms": f"card placed on a PC/SC reader (vpcd) to the door's relay, median of {N}, ms",
    "hil.card_to_relay_p95_ms": f"same, 95th percentile of {N}, ms",
    "hil.card_to_refusal_ms": f"a clone placed to the door's refusal (red LED), median of {N}, ms",
    "hil.forced_open_to_platform_ms": "door forced open to the alarm stored at the platform, ms",
    "hil.held_open_after_limit_ms": "held-open alarm stored at the platform, after the configured "
                                    "limit, ms",
    "hil.drain_events_per_s": f"a {BACKLOG}-event offline backlog drained to the platform after "
                              "the broker returns, events/s",
    "hil.rex_baseline_ms": f"baseline: REX pressed to the relay, median of {N}, ms",
}


def run(names: set[str]) -> dict[str, float]:
    # In a process group of its own: cut short, the rig is told to stop (SIGINT, its cleanup
    # runs) and then its whole group goes, so nothing it started outlives it. Killing the one
    # process, as subprocess.run does, left its broker, virtual door and pcscd running.
    proc = subprocess.Popen([sys.executable, "-m", "hil.figures", str(N), str(BACKLOG)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, process_group=0)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except BaseException:  # the time limit, Ctrl-C (which reaches this process group only)
        _stop_group(proc)
        raise
    if proc.returncode != 0:
        lines = (err or out).strip().splitlines()
        raise RuntimeError(f"the virtual rig failed: {lines[-1] if lines else proc.returncode}")
    got = json.loads(out.strip().splitlines()[-1])
    return {name: float(value) for name, value in got.items()}


def _stop_group(proc: subprocess.Popen[str], grace_s: float = 30.0) -> None:
    """SIGINT to the rig's process group, then SIGKILL to what is left of it after `grace_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.communicate(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group outlives its leader: its children
    proc.wait()
