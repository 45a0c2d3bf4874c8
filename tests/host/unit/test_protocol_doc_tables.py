"""The code tables the docs give (docs/protocol.md, docs/card-profile.md) against the ones the
door journals (wire/codes.py, firmware/commands.py, firmware/cache_sync.py,
firmware/refusals.py): the platform's operators read the docs to understand a number, so
every number the door can write is in them, under its name. And the functions the docs cite
for what a MAC covers exist where they say (the codec left firmware/protocol.py for wire/)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from firmware import cache_sync, commands, refusals
from wire import codes
from wire.names import EVENT_NAMES

ROOT = Path(__file__).resolve().parents[3]
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def _rows(section: str) -> dict[int, str]:
    """`| code | name |` rows of a markdown table: code -> name (backticks dropped)."""
    return {int(c): n for c, n in re.findall(r"^\| (\d+) \| `?(\w+)`? \|", section, re.M)}


def test_the_event_code_table_is_the_doors():
    assert _rows(_section(PROTOCOL, "## Event codes")) == EVENT_NAMES


def test_the_access_denied_table_is_the_doors():
    table = _rows(_section(PROTOCOL, "## Reasons of `access_denied`"))
    assert table == {code: name for code, name in enumerate(codes.DENY_REASONS) if name}
    assert all(codes.deny_code(name) == code for code, name in table.items())


def test_the_cache_rejected_reasons_are_the_doors_in_their_order():
    row = re.search(r"^\| 44 \| cache_rejected \| reason: (.*?) \|", PROTOCOL, re.M)
    assert row is not None
    listed = {int(c): n for c, n in re.findall(r"(\d+) (\w+)", row.group(1))}
    assert listed == dict(enumerate(cache_sync.REJECT_REASONS, 1))


def test_every_command_rejected_reason_the_door_can_journal_is_in_the_table():
    table = _section(PROTOCOL, "| reason (event arg) | why |").split("\n\n", 1)[0]
    listed = {(n, int(c)) for n, c in re.findall(r"`(\w+)[^`]*` \((\d+)\)", table)}
    for code, name in enumerate(commands.REJECT_REASONS, 1):
        assert (name, code) in listed, f"command_rejected {code} ({name}) is not in docs/protocol.md"
        assert commands.reject_code(name) == code


def test_the_refusal_codes_are_the_doors():
    text = _section(PROTOCOL, "## Reason codes of refused messages")
    listed = {n: int(c) for n, c in re.findall(r"`(\w+)`\s+\((\d+)", text)}
    assert listed == {name: c for c, name in enumerate(refusals.REASONS) if name}
    assert all(refusals.code(name) == c for name, c in listed.items())


def test_the_card_step_table_is_the_doors():
    text = (ROOT / "docs" / "card-profile.md").read_text()
    table = _rows(text.split("Failures give a reason", 1)[1].split("\n\n", 2)[1])
    want = {c: n for c, n in enumerate(codes.CARD_REASONS) if n and c != codes.CARD_OK}
    assert table == want


def _defined(module: Path) -> set[str]:
    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def test_the_docs_cite_the_codecs_functions_where_they_are():
    cited = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        text = doc.read_text()
        # firmware/protocol.py is gone: a `protocol.name` is a function nobody can find
        gone = re.findall(r"`protocol\.(\w+)`", text)
        assert not gone, f"{doc.name} cites protocol.{gone[0]} (the codec is in wire/ now)"
        cited += [(doc.name, m, n) for m, n in re.findall(r"`wire\.(\w+)\.(\w+)`", text)]
    assert cited  # the codec's functions are cited by their wire module
    for doc_name, module, name in cited:
        path = ROOT / "wire" / f"{module}.py"
        assert path.is_file() and name in _defined(path), f"{doc_name}: wire.{module}.{name}"
