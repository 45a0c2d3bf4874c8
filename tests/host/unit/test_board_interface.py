"""The board interface is written down once and the three places that depend on it agree:
docs/architecture.md's table, board/interface.py, what the firmware reads from a board, and
what every board module sets. Read from the sources (the boards' modules import the ports'
own modules: `esp32`, `mps2`), so it runs without a device."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from board import interface
from firmware.door_task import INPUT_NAMES
from host_tools.boards import boards
from host_tools.paths import REPO_ROOT

# Every board the tree declares (host_tools/boards.py): a new board is checked as it is added.
BOARD_MODULES = tuple(f"{b.module}.py" for b in boards())
BOARD_NAMES = {"board"}  # parameter and variable names the firmware gives a board


def _doc_members() -> dict[str, str]:
    """Member name -> interface cell, from the table under "## The board interface"."""
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## The board interface", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        for name in re.findall(r"`(\w+)", cells[0]):
            rows[name] = cells[1]
    return rows


def _board_reads(tree: ast.AST) -> set[str]:
    """Attributes read from a board: `board.x`, `self.board.x`, and `b.x` where
    `b = self.board` (or `= board`)."""
    aliases = set(BOARD_NAMES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _is_board(node.value, aliases):
            aliases |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_board(node.value, aliases):
            found.add(node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "hasattr") and node.args \
                and _is_board(node.args[0], aliases):
            found.add("<getattr>")
    return found


def _is_board(node: ast.AST, aliases: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in aliases
    return isinstance(node, ast.Attribute) and node.attr == "board" \
        and isinstance(node.value, ast.Name) and node.value.id == "self"


def _firmware_reads() -> dict[str, set[str]]:
    reads: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / "firmware").glob("*.py")):
        got = _board_reads(ast.parse(path.read_text()))
        if got:
            reads[path.name] = got
    return reads


def _sets(cls: ast.ClassDef) -> set[str]:
    """Names a class sets: class attributes, methods and `self.x = ...` anywhere in it."""
    names: set[str] = set()
    for node in cls.body:
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) \
                        and t.value.id == "self":
                    names.add(t.attr)
    return names


def _subclasses(path: Path, base: str) -> list[ast.ClassDef]:
    tree = ast.parse(path.read_text())
    return [n for n in tree.body if isinstance(n, ast.ClassDef)
            and any(ast.unparse(b) == f"interface.{base}" for b in n.bases)]


def test_the_table_lists_exactly_the_interface_module_s_members() -> None:
    doc = _doc_members()
    assert set(doc) == set(interface.REQUIRED) | set(interface.OPTIONAL)
    for name in interface.REQUIRED:
        assert "required" in doc[name], name
    for name in interface.CLOCK:
        assert f"`{name}" in doc["clock"], name


def test_the_interface_module_defines_every_member_with_its_default() -> None:
    for name in interface.REQUIRED + interface.OPTIONAL:
        assert hasattr(interface.Board, name), name
    for name in interface.OPTIONAL:
        if name == "reset_cause":
            assert interface.Board().reset_cause() is None
        elif name == "boot_count":
            assert interface.Board.boot_count == 0
        else:
            assert getattr(interface.Board, name) is None, name
    for name in interface.CLOCK:
        assert hasattr(interface.Clock, name), name


def test_the_firmware_reads_only_members_of_the_table_and_never_guesses() -> None:
    reads = _firmware_reads()
    assert "main.py" in reads and "door_task.py" in reads and "card_task.py" in reads
    members = set(interface.REQUIRED) | set(interface.OPTIONAL)
    # The door task reads its inputs by name: getattr(board, name) over INPUT_NAMES.
    assert set(INPUT_NAMES) <= members
    used = set().union(*reads.values()) | set(INPUT_NAMES)
    for module, names in reads.items():
        assert "<getattr>" not in names or module == "door_task.py", module
    used.discard("<getattr>")
    assert used <= members, sorted(used - members)
    assert used == members, sorted(members - used)  # nothing in the table goes unread


def test_the_door_task_s_getattr_is_over_its_input_names_only() -> None:
    source = (REPO_ROOT / "firmware" / "door_task.py").read_text()
    assert re.findall(r"getattr\(board, (\w+)\)", source) == ["name"]
    assert "name = INPUT_NAMES[i]" in source


def test_every_board_module_provides_every_required_member() -> None:
    for module in BOARD_MODULES:
        path = REPO_ROOT / "board" / module
        boards = _subclasses(path, "Board")
        clocks = _subclasses(path, "Clock")
        assert len(boards) == 1 and len(clocks) == 1, module
        sets = _sets(boards[0])
        for name in interface.REQUIRED:
            assert name in sets, (module, name)
        assert {"time", "set_time"} <= _sets(clocks[0]), module  # the abstract ones
        assert "trusted" in _sets(clocks[0]) or module == "mcu_qemu.py", module


def test_a_board_that_sets_nothing_optional_runs_without_those_parts() -> None:
    class Bare(interface.Board):
        name = "bare"
        fs_root = "/"
        clock = interface.Clock()

    b = Bare()
    assert b.relay is None and b.reader_uart is None and b.journal_dev is None
    assert b.boot_count == 0 and b.reset_cause() is None


def _clock_guesses(tree: ast.AST) -> list[str]:
    """getattr/hasattr calls on a clock (`clock`, `self.clock`, `board.clock`), by member."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "hasattr") and len(node.args) > 1:
            first = node.args[0]
            name = first.id if isinstance(first, ast.Name) else \
                first.attr if isinstance(first, ast.Attribute) else ""
            if name == "clock":
                member = node.args[1]
                out.append(member.value if isinstance(member, ast.Constant) else "?")
    return out


def test_the_firmware_reads_the_clock_s_declared_members_and_never_guesses() -> None:
    """`trusted` is a member of every clock (board/interface.py): a getattr with a default
    would take a clock without it as trusted."""
    guesses = {path.name: _clock_guesses(ast.parse(path.read_text()))
               for path in sorted((REPO_ROOT / "firmware").glob("*.py"))}
    assert {k: v for k, v in guesses.items() if v} == {}
    assert _clock_guesses(ast.parse('x = getattr(self.clock, "trusted", True)')) == ["trusted"]
