"""Every package at the repository's root has its row in the README's layout table and in
docs/architecture.md's folders table: a reader looking for where a piece of the door lives
(the wire package the door and the platform share, say) finds it named there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _folders(text: str, heading: str) -> set[str]:
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(\w+)/", section, re.M))


def test_every_root_package_is_in_the_layout_tables():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert {"firmware", "wire", "board"} <= packages
    readme = _folders((ROOT / "README.md").read_text(), "## Layout")
    architecture = _folders((ROOT / "docs" / "architecture.md").read_text(), "## Folders")
    assert sorted(packages - readme) == [], "README.md, Layout"
    assert sorted(packages - architecture) == [], "docs/architecture.md, Folders"
