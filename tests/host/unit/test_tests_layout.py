"""tests/host holds one folder per kind of test, each described in tests/README.md: a test file
dropped in tests/host itself, or a folder the README does not name, has no kind a reader can
find (and no command in the README that runs it). And every test file the docs and the code
cite by path is there, so a move or a rename cannot leave a reader at a dead path."""

from __future__ import annotations

import re
from pathlib import Path

from host_tools.paths import DEVICE_PACKAGES

ROOT = Path(__file__).resolve().parents[3]
TESTS = Path(__file__).resolve().parents[2]
HOST = TESTS / "host"


def _kinds() -> list[str]:
    return sorted(p.name for p in HOST.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def test_no_test_file_sits_in_tests_host_itself() -> None:
    stray = sorted(p.name for p in HOST.glob("*.py"))
    assert not stray, f"move {stray} into the folder of their kind (tests/README.md)"


def test_every_kind_folder_is_described_in_the_readme() -> None:
    readme = (TESTS / "README.md").read_text()
    assert _kinds(), "tests/host has no kind folders"
    missing = [k for k in _kinds() if f"`host/{k}/`" not in readme]
    assert not missing, f"tests/README.md does not describe tests/host/{missing}"


def _citing_files() -> list[Path]:
    files = [*ROOT.glob("*.md"), ROOT / "pyproject.toml", *(ROOT / "docs").rglob("*.md")]
    files += TESTS.rglob("*.py")
    for pkg in (*DEVICE_PACKAGES, "host_tools", "reference_platform", "hil"):
        files += (ROOT / pkg).rglob("*.py")
    return files


def test_every_cited_test_file_exists() -> None:
    cited = {(f.relative_to(ROOT), m) for f in _citing_files()
             for m in re.findall(r"tests/[a-z_/]+/test_[a-z0-9_]+\.py", f.read_text(errors="replace"))}
    assert cited, "no test file cited anywhere: the pattern is wrong"
    dead = sorted(f"{src}: {path}" for src, path in cited if not (ROOT / path).is_file())
    assert not dead, "dead test paths: " + "; ".join(dead)
