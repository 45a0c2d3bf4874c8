"""tests/host holds one folder per kind of test, each described in tests/README.md: a test file
dropped in tests/host itself, or a folder the README does not name, has no kind a reader can
find (and no command in the README that runs it)."""

from __future__ import annotations

from pathlib import Path

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
