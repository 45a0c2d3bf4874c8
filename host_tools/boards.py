"""What each board needs on the device, read from the board module's own declaration.

A board is one file, `board/<module>.py`, that declares at its top, as plain literals:

    PLATFORM = "esp32"                  # the `sys.platform` of the MicroPython it runs on
    PACKAGES = ("firmware", "crypto")   # application packages it runs (HOST_SIDE: not)
    DEVICE_FILES = ("board/romfs.py",)  # other files it needs (board/__init__.py,
                                        # board/interface.py and itself always come along)
    ENTRY = "board/esp32_main.py"       # its boot script, written as the device's main.py;
                                        # None when something else starts it

and names itself in its `Board` subclass (`name = "esp32-ref"`). `doorctl deploy`, the
firmware-image manifests (board/*/manifest.py) and the tests read these with `ast`, never by
importing the module: a board module imports `machine`, `network` or `mps2`, which CPython
does not have. This module uses the standard library only, so an image manifest (run by
MicroPython's build tools on whatever Python runs `make`) can import it too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BOARD_DIR = "board"
# Every board module carries these; a module of board/ without them is not a board.
FIELDS = ("PLATFORM", "PACKAGES", "DEVICE_FILES", "ENTRY")
# What every board runs on: the package marker and the interface it implements.
BASE_FILES = ("board/__init__.py", "board/interface.py")
# Modules of the shared packages that only the host runs (device code never imports them,
# tests/host/unit/test_import_graph.py): the platform's half of the protocol and the event
# names for people. A board's packages are sent and frozen without them, so they take neither
# the door's flash nor its image; the shared tests load them from source on an image
# (tests/mpy_runner.py).
HOST_SIDE = ("wire/platform.py", "wire/names.py")


class BoardError(ValueError):
    """A board module's declaration is missing, malformed, or names files that do not exist."""


@dataclass(frozen=True)
class BoardSpec:
    module: str  # e.g. "esp32_ref": board/<module>.py
    name: str  # the Board subclass's `name`, recorded by deploy as the target
    platform: str
    packages: tuple[str, ...]
    device_files: tuple[str, ...]  # repo-relative sources, as declared
    entry: str | None

    @property
    def source(self) -> str:
        return f"{BOARD_DIR}/{self.module}.py"

    def files(self, root: Path = REPO_ROOT) -> list[str]:
        """Every source this board needs on the device (repo-relative, sorted): the board
        package's base, itself, its declared files and every module of its packages but the
        host-side ones (HOST_SIDE). The entry is not among them: it is the device's main.py,
        not a library file."""
        wanted = {*BASE_FILES, self.source, *self.device_files}
        for pkg in self.packages:
            for path in (root / pkg).rglob("*.py"):
                rel = path.relative_to(root).as_posix()
                if "__pycache__" not in path.parts and rel not in HOST_SIDE:
                    wanted.add(rel)
        return sorted(wanted)


def _literal(node: ast.expr, module: str, field: str) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise BoardError(f"board/{module}.py: {field} must be a plain literal") from None


def _class_name(tree: ast.Module) -> str | None:
    """The `name = "..."` of the module's Board subclass."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Attribute) and b.attr == "Board" for b in node.bases):
            for item in node.body:
                if (isinstance(item, ast.Assign) and len(item.targets) == 1
                        and isinstance(item.targets[0], ast.Name) and item.targets[0].id == "name"
                        and isinstance(item.value, ast.Constant)
                        and isinstance(item.value.value, str)):
                    return item.value.value
    return None


def _str_tuple(value: object, module: str, field: str) -> tuple[str, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise BoardError(f"board/{module}.py: {field} must be a tuple of strings")
    return value


def read_board(module: str, root: Path = REPO_ROOT) -> BoardSpec | None:
    """The declaration of board/<module>.py, or None when that module declares none (it is
    support code, not a board). Raises BoardError for a half or broken declaration."""
    path = root / BOARD_DIR / f"{module}.py"
    tree = ast.parse(path.read_text(), str(path))
    found: dict[str, object] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id in FIELDS):
            found[node.targets[0].id] = _literal(node.value, module, node.targets[0].id)
    if not found:
        return None
    missing = [f for f in FIELDS if f not in found]
    if missing:
        raise BoardError(f"board/{module}.py declares no {', '.join(missing)}")
    platform, entry = found["PLATFORM"], found["ENTRY"]
    if not isinstance(platform, str) or not platform:
        raise BoardError(f"board/{module}.py: PLATFORM must be a string (its sys.platform)")
    if entry is not None and not isinstance(entry, str):
        raise BoardError(f"board/{module}.py: ENTRY must be a path or None")
    name = _class_name(tree)
    if name is None:
        raise BoardError(f"board/{module}.py has no Board subclass with a `name`")
    spec = BoardSpec(module, name, platform,
                     _str_tuple(found["PACKAGES"], module, "PACKAGES"),
                     _str_tuple(found["DEVICE_FILES"], module, "DEVICE_FILES"), entry)
    for rel in (*spec.device_files, *([entry] if entry else [])):
        if not rel.endswith(".py") or not (root / rel).is_file():
            raise BoardError(f"board/{module}.py declares {rel}, which is not a source file")
    for pkg in spec.packages:
        if not (root / pkg / "__init__.py").is_file():
            raise BoardError(f"board/{module}.py declares package {pkg}, which does not exist")
    return spec


def boards(root: Path = REPO_ROOT) -> list[BoardSpec]:
    """Every board under board/, by module name."""
    found = []
    for path in sorted((root / BOARD_DIR).glob("*.py")):
        if path.name in ("__init__.py", "manifest.py"):
            continue
        spec = read_board(path.stem, root)
        if spec is not None:
            found.append(spec)
    return found


def board_named(name: str, root: Path = REPO_ROOT) -> BoardSpec:
    """The board whose module or `name` is `name` (`esp32_ref` or `esp32-ref`)."""
    every = boards(root)
    for spec in every:
        if name in (spec.module, spec.name):
            return spec
    raise BoardError(f"no board {name!r}: the boards are "
                     f"{', '.join(s.name for s in every) or 'none'} (board/*.py)")


def board_for_platform(platform: str, root: Path = REPO_ROOT) -> BoardSpec | None:
    """The one board that runs on `platform`; None when no board does. Two boards on one
    platform: the caller must choose (BoardError)."""
    matches = [s for s in boards(root) if s.platform == platform]
    if len(matches) > 1:
        raise BoardError(f"boards {' and '.join(s.name for s in matches)} both run on "
                         f"{platform}: choose one with --board")
    return matches[0] if matches else None
