"""The import graph says what the system is (docs/architecture.md): device code never imports
host code, host code imports no firmware module (only the packages shared with the device,
which themselves import nothing from the firmware), and import cycles are the few listed ones
(which may go, and no new one may come)."""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("firmware", "wire", "card_reader", "journal_format", "ticks", "board", "crypto", "offline_cache",
            "host_tools", "reference_platform", "hil")
DEVICE = ("firmware", "wire", "card_reader", "journal_format", "ticks", "board", "crypto", "offline_cache")
HOST = ("host_tools", "reference_platform", "hil")

# What the host shares with the door, each designed for both interpreters and tested in
# tests/shared: the wire format, the card reader side (PN532 Core, card step, presentation
# timing), the journal's on-flash format, tick arithmetic, card crypto, the whitelist cache.
# The firmware's VERSION is read from its source (host_tools/deploy.py firmware_version).
SHARED = ("wire", "card_reader", "journal_format", "ticks", "crypto", "offline_cache")
# MicroPython programs the benchmarks run on a device (mypy leaves them out for that reason):
# they measure firmware modules in place, so they import them as the door does.
DEVICE_PROGRAMS = ("host_tools.benchmarks.device",)

# Cycles that exist today; each is debt with a known way out. (door_stage <-> vdev.provision
# went when both took the console from host_tools/console.py.)
KNOWN_CYCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            if "tests" in rel.parts:
                continue  # a package's own tests are not part of what it is
            if path.name == "manifest.py":
                continue  # image manifests run in MicroPython's build, on the host (paths.device_sources)
            name = ".".join(rel.parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _imported(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Every module of ours `name` imports, at any level (a function's import counts too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c in mods and c != name}
    return found


@cache
def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imported(name, path, mods) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.add(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}
    assert _cycles({"a": {"b"}, "b": set()}) == set()


def test_device_code_imports_no_host_code() -> None:
    graph = _graph()
    wrong = sorted(f"{m} imports {t}" for m, ts in graph.items() if m.startswith(DEVICE)
                   for t in ts if t.startswith(HOST))
    assert wrong == []


def test_the_host_imports_no_firmware_module() -> None:
    graph = _graph()
    used = {f"{m} imports {t}" for m, ts in graph.items()
            if m.startswith(HOST) and not m.startswith(DEVICE_PROGRAMS)
            for t in ts if t.split(".")[0] == "firmware"}
    assert sorted(used) == []


def test_the_shared_packages_import_no_firmware_module() -> None:
    """Else a host import of a shared module would bring the firmware along."""
    graph = _graph()
    wrong = sorted(f"{m} imports {t}" for m, ts in graph.items() if m.split(".")[0] in SHARED
                   for t in ts if t.split(".")[0] == "firmware")
    assert wrong == []


def test_device_code_imports_no_host_side_module_of_the_shared_packages() -> None:
    """They are neither deployed nor frozen (host_tools/boards.py HOST_SIDE): a door that
    imported one would fail at that import."""
    from host_tools.boards import HOST_SIDE

    host_side = {rel[:-3].replace("/", ".") for rel in HOST_SIDE}
    graph = _graph()
    assert host_side <= set(graph)
    wrong = sorted(f"{m} imports {t}" for m, ts in graph.items() if m.startswith(DEVICE)
                   and m not in host_side for t in ts if t in host_side)
    assert wrong == []


def test_the_cli_imports_nothing_from_the_test_rig() -> None:
    """doorctl (host_tools) runs without hil/: the torture run, the brokers, the fault proxy
    and the TLS test CA are host_tools' own; the HIL benchmark runs the rig in a process of its
    own (python -m hil.figures)."""
    graph = _graph()
    wrong = sorted(f"{m} imports {t}" for m, ts in graph.items() if m.startswith("host_tools")
                   for t in ts if t.split(".")[0] == "hil")
    assert wrong == []


def test_import_cycles_are_the_known_ones_only() -> None:
    cycles = _cycles(_graph())
    assert cycles - KNOWN_CYCLES == set(), "a new import cycle"
    assert KNOWN_CYCLES - cycles == set(), "a known cycle is gone: take it off the list"


def test_the_graph_sees_the_imports_it_checks() -> None:
    graph = _graph()
    assert "wire.platform" in graph["reference_platform.ingest"]
    assert "card_reader.pn532" in graph["host_tools.pn532_sync"]  # what the firmware check above would see
    assert "firmware.journal" in graph["firmware.main"]
    assert "hil.rig" in graph["hil.virtual"]  # what the rig check above would see
    assert len(graph) > 100
    by_package = defaultdict(int)
    for m in graph:
        by_package[m.split(".")[0]] += 1
    assert set(by_package) == set(PACKAGES)
