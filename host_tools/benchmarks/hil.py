"""The HIL rig's timing table on the virtual rig: cards on vpcd behind pcscd, relayed by the PN532
emulator to the virtual door, with mosquitto and the platform. Baseline in the same run: a REX
press to the relay (the same door and I/O path, no card). The rig measures in a process of its
own (hil/figures.py): the CLI does not import the test rig."""

from __future__ import annotations

import json
import subprocess
import sys

from host_tools.paths import REPO_ROOT

N = 10
BACKLOG = 2000
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
    proc = subprocess.run([sys.executable, "-m", "hil.figures", str(N), str(BACKLOG)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"the virtual rig failed: {lines[-1] if lines else proc.returncode}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: float(value) for name, value in got.items()}
