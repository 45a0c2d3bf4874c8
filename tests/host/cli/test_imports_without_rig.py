"""The CLI is a product, the HIL rig (hil/) a test bench: loading `doorctl` with every command
and every benchmark module imports nothing from `hil`. The HIL benchmark runs the rig in a
process of its own (`python -m hil.figures`); no host_tools module imports it at all
(tests/host/unit/test_import_graph.py)."""

from __future__ import annotations

import subprocess
import sys

from host_tools.paths import REPO_ROOT

LOAD_EVERYTHING = """
import sys
import host_tools.cli
from host_tools.benchmarks import discover
discover()
print(sorted(m for m in sys.modules if m == "hil" or m.startswith("hil.")))
"""


def test_the_cli_and_its_benchmarks_load_without_the_rig() -> None:
    run = subprocess.run([sys.executable, "-c", LOAD_EVERYTHING], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
