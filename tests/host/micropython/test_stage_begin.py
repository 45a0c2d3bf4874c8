"""A new commissioning never drops a commit its predecessor left half applied: the begin step
finishes it first (firmware/staging.py), so a door stopped at its console between the commit and
the boot that applies it (or cut during that boot) cannot end with the keys of one site and the
configuration and whitelist of another. Run on MicroPython, as the door runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from host_tools.door_stage import _BEGIN
from host_tools.paths import micropython, micropython_env


def run_begin(root: Path, targets: list[str]) -> str:
    r = subprocess.run([micropython(), "-c", _BEGIN % (targets,)], cwd=root, env=micropython_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_half_applied_commit_is_finished_not_dropped(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    # Site B's commissioning committed; boot moved keys.json into place, then the power went.
    (tmp_path / "keys.json").write_text("KEYS-B")
    (tmp_path / "config.json").write_text("CFG-A")
    (tmp_path / "config.json.stage").write_text("CFG-B")
    (tmp_path / "cache" / "main.bin").write_text("WL-A")
    (tmp_path / "cache" / "main.bin.stage").write_text("WL-B")
    (tmp_path / "stage.json").write_text(json.dumps(
        {"put": ["keys.json", "config.json", "cache/main.bin"], "remove": []}))
    out = run_begin(tmp_path, ["keys.json", "config.json"])  # a new commissioning starts
    assert "FINISHED 2" in out
    assert (tmp_path / "keys.json").read_text() == "KEYS-B"
    assert (tmp_path / "config.json").read_text() == "CFG-B"
    assert (tmp_path / "cache" / "main.bin").read_text() == "WL-B"
    assert not (tmp_path / "stage.json").exists()
    assert not list(tmp_path.rglob("*.stage"))


def test_without_a_commit_stale_staged_files_are_dropped_and_reusable_ones_kept(tmp_path: Path) -> None:
    (tmp_path / "config.json.stage").write_text("X" * 10)
    (tmp_path / "ca.pem.stage").write_text("Y")
    out = run_begin(tmp_path, ["config.json"])
    assert "FINISHED" not in out and "HAS config.json 10" in out
    assert (tmp_path / "config.json.stage").exists() and not (tmp_path / "ca.pem.stage").exists()
