"""`doorctl bench hil` runs the virtual rig in a process of its own (hil/figures.py): when that
run is cut short (its time limit, Ctrl-C) the rig still stops what it started, the broker, the
virtual door and the private pcscd, instead of leaving them running once its process is killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# The run's caller adopts whatever the rig leaves orphaned (a child subreaper), in its own
# session or not, and lists what is still running a second after the rig's run returned.
RUN = """
import ctypes, json, os, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
from host_tools.benchmarks import hil
hil.TIMEOUT_S, hil.N, hil.BACKLOG = 5, 1, 20
try:
    hil.run(set())
    why = "finished"
except Exception as e:
    why = type(e).__name__
time.sleep(1)
left = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        if int(stat[1]) == os.getpid() and stat[0] != "Z":
            left[pid] = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
            os.kill(int(pid), 9)  # not left running for the rest of the suite
    except (OSError, IndexError, ValueError):
        pass
print(json.dumps({"why": why, "left": left}))
"""


def test_a_rig_run_past_its_time_limit_leaves_no_process_behind() -> None:
    proc = subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["why"] == "TimeoutExpired"  # cut short, not finished
    assert got["left"] == {}
