"""`doorctl deploy` to a fresh virtual device, and again with nothing changed, beside a plain
recursive `mpremote fs cp` of the same compiled tree."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from host_tools.benchmarks import Outcome, failing
from host_tools.deploy import MPREMOTE, board_for, deploy, local_files
from host_tools.vdev.device import VirtualDevice

BASELINE_PACKAGES: int | None = None  # copied by the baseline (None: all, as deploy does)
SMOKE = {"BASELINE_PACKAGES": 1}

FIGURES = {
    "deploy.files": "files a virtual device receives (compiled .mpy)",
    "deploy.first_s": "doorctl deploy to a fresh virtual device: probe, copy, verify, manifest, s",
    "deploy.again_s": "doorctl deploy again with nothing changed (hashes match, nothing copied), s",
    "deploy.baseline_cp_s": "baseline: `mpremote fs cp -r` of the same tree to a fresh device, "
                            "no verification, s",
}


def _timed_deploy(port: str) -> tuple[float, int]:
    t = time.perf_counter()
    result = deploy(port)
    return time.perf_counter() - t, len(result.files)


def run(names: set[str]) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    local_files(board_for("linux"))  # compile first: not part of any figure
    deploy_figures = ("deploy.files", "deploy.first_s", "deploy.again_s")
    with failing(out, *deploy_figures):
        if names & set(deploy_figures):
            with tempfile.TemporaryDirectory() as tmp, VirtualDevice(Path(tmp) / "d") as dev:
                out["deploy.first_s"], files = _timed_deploy(dev.pty)
                out["deploy.files"] = float(files)
                out["deploy.again_s"], _ = _timed_deploy(dev.pty)
    with failing(out, "deploy.baseline_cp_s"):
        if "deploy.baseline_cp_s" in names:
            _baseline(out)
    return out


def _baseline(out: dict[str, Outcome]) -> None:
    """`mpremote fs cp -r` of the same tree to a fresh device."""
    with tempfile.TemporaryDirectory() as tmp, VirtualDevice(Path(tmp) / "d") as dev:
        tree = Path(tmp) / "tree"
        for dev_path, src in local_files(board_for("linux")).items():
            dest = tree / dev_path  # lib/…, the same files deploy sends
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(src.read_bytes())
        t = time.perf_counter()
        subprocess.run([MPREMOTE, "connect", dev.pty, "fs", "cp", "-r",
                        *[str(p) for p in sorted((tree / "lib").iterdir())[:BASELINE_PACKAGES]],
                        ":lib/"],
                       check=True, capture_output=True, timeout=600)
        out["deploy.baseline_cp_s"] = time.perf_counter() - t
