"""The ESP32's boot entry (board/esp32_main.py, deployed as main.py) picks the deployed set
as the virtual board does: the active set of active.json when its manifest is there and its
code imports, else the previous set, else /lib, else the REPL with one safe-mode line. Run by
the unix port in a folder laid out as the board's filesystem, with a stand-in board main."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from host_tools.paths import REPO_ROOT, micropython

BOOT = REPO_ROOT / "board" / "esp32_main.py"


def board_set(root: Path, where: str, body: str, manifest: bool = True) -> None:
    pkg = root / where / "board"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "esp32_ref.py").write_text(body)
    if manifest and where.startswith("sets/"):
        (root / where).parent.joinpath("deploy.json").write_text(json.dumps({"files": {}}))


def boot(root: Path) -> list[str]:
    env = {"MICROPYPATH": ""}  # nothing built in: only what is on the "flash"
    out = subprocess.run([micropython(), str(BOOT)], cwd=root, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()


RUNS = "def main():\n    print('RUN %s')\n"
TORN = "raise ValueError('torn module')\n"


def test_the_active_set_runs(tmp_path: Path) -> None:
    board_set(tmp_path, "sets/a/lib", RUNS % "a")
    board_set(tmp_path, "sets/b/lib", RUNS % "b")
    (tmp_path / "active.json").write_text('{"active": "sets/b", "previous": "sets/a"}')
    assert boot(tmp_path) == ["RUN b"]


def test_an_active_set_that_does_not_import_boots_the_previous_one(tmp_path: Path) -> None:
    board_set(tmp_path, "sets/a/lib", RUNS % "a")
    board_set(tmp_path, "sets/b/lib", TORN)
    (tmp_path / "active.json").write_text('{"active": "sets/b", "previous": "sets/a"}')
    lines = boot(tmp_path)
    assert lines[-1] == "RUN a"
    assert lines[0].startswith("doorctl: running sets/a because "), lines
    assert "active sets/b" in lines[0] and "torn module" in lines[0], lines


def test_an_unfinished_set_is_not_taken(tmp_path: Path) -> None:
    board_set(tmp_path, "sets/a/lib", RUNS % "a")
    board_set(tmp_path, "sets/b/lib", RUNS % "b", manifest=False)  # cut before its manifest
    (tmp_path / "active.json").write_text('{"active": "sets/b", "previous": "sets/a"}')
    lines = boot(tmp_path)
    assert lines[-1] == "RUN a" and "no deploy.json" in lines[0], lines


def test_no_whole_set_leaves_the_repl_with_one_safe_mode_line(tmp_path: Path) -> None:
    board_set(tmp_path, "sets/a/lib", TORN)
    (tmp_path / "active.json").write_text('{"active": "sets/a", "previous": null}')
    lines = boot(tmp_path)
    assert len(lines) == 1 and lines[0].startswith("doorctl: safe mode:"), lines


def booted(root: Path) -> dict[str, object]:
    return json.loads((root / "booted.json").read_text())


def test_the_set_taken_is_recorded_for_deploy(tmp_path: Path) -> None:
    board_set(tmp_path, "sets/a/lib", RUNS % "a")
    board_set(tmp_path, "sets/b/lib", TORN)
    (tmp_path / "active.json").write_text('{"active": "sets/b", "previous": "sets/a"}')
    assert boot(tmp_path)[-1] == "RUN a"
    assert booted(tmp_path) == {"set": "sets/a", "role": "previous"}


def _dated(root: Path, where: str, time: str) -> None:
    (root / where / "deploy.json").write_text(json.dumps({"files": {}, "time": time}))


@pytest.mark.parametrize("content", ["", "\n", '{"active": "sets/b", "prev', "[]", "{}"])
def test_an_unreadable_active_json_boots_the_newest_whole_set(tmp_path: Path,
                                                              content: str) -> None:
    board_set(tmp_path, "sets/a/lib", RUNS % "a")
    board_set(tmp_path, "sets/b/lib", RUNS % "b")
    _dated(tmp_path, "sets/a", "2026-01-01T00:00:00+00:00")
    _dated(tmp_path, "sets/b", "2026-02-01T00:00:00+00:00")
    (tmp_path / "active.json").write_text(content)
    lines = boot(tmp_path)
    assert lines[-1] == "RUN b", lines
    assert "active.json unreadable" in lines[0], lines
    assert booted(tmp_path) == {"set": "sets/b", "role": "newest"}


def test_an_unreadable_active_json_boots_the_other_set_when_the_newest_is_torn(
        tmp_path: Path) -> None:
    board_set(tmp_path, "sets/a/lib", RUNS % "a")
    board_set(tmp_path, "sets/b/lib", TORN)
    _dated(tmp_path, "sets/a", "2026-01-01T00:00:00+00:00")
    _dated(tmp_path, "sets/b", "2026-02-01T00:00:00+00:00")
    (tmp_path / "active.json").write_text('{"act')
    lines = boot(tmp_path)
    assert lines[-1] == "RUN a", lines
    assert booted(tmp_path) == {"set": "sets/a", "role": "older"}
