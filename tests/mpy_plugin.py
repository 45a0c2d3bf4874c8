"""pytest collection of device tests that run under the real MicroPython unix port.

- `tests/device/test_*.py` run only under MicroPython;
- `tests/shared/test_*.py` run under CPython (normal pytest) *and* under MicroPython.

Device packages are imported as `.mpy` compiled by mpy-cross (as on a deployed device);
the test file itself is compiled from source. Each test function becomes one pytest
item `name[mpy]`, run in its own MicroPython process with a constrained heap
(64 KiB unless the file says `# mpy-heapsize: 256K`).
With `--image unix32` (conftest.py) the items are `name[unix32]` and run on the 32-bit
firmware image, the device packages frozen in it (the `.mpy` tree is still on the path,
after the frozen modules, for board code the image does not freeze).
A test gets a private scratch directory in the environment variable MPY_TEST_TMP.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from host_tools.mpy_build import DEFAULT_BUILD_DIR, build_device_tree
from host_tools.paths import REPO_ROOT, micropython, micropython_env
from host_tools.vdev.device import selected_image, unix32_binary

RUNNER = Path(__file__).with_name("mpy_runner.py")
DEFAULT_HEAP = "64K"
HEAP_PRAGMA = re.compile(r"^#\s*mpy-heapsize:\s*(\d+[KM]?)\s*$", re.M)
TIMEOUT_S = 240


class MpyTestFailure(Exception):
    """A device test failed; carries MicroPython's own output."""


def _heapsize(path: Path) -> str:
    match = HEAP_PRAGMA.search(path.read_text())
    return match.group(1) if match else DEFAULT_HEAP


_built: list[bool] = []


def _device_tree() -> Path:
    """Device packages compiled to .mpy once per session, as a device imports them."""
    if not _built:
        build_device_tree(DEFAULT_BUILD_DIR)
        _built.append(True)
    return DEFAULT_BUILD_DIR


_unix32: list[str] = []


def _interpreter(path: Path) -> tuple[str, dict[str, str]]:
    """The MicroPython to run device tests on, and its environment."""
    if selected_image() != "unix32":
        return micropython(), micropython_env(path.parent, _device_tree())
    if not _unix32:
        _unix32.append(unix32_binary())
    env = micropython_env()
    env["MICROPYPATH"] = ":".join([str(path.parent), ".frozen", str(_device_tree()), str(REPO_ROOT)])
    return _unix32[0], env


def _suffix() -> str:
    return "unix32" if selected_image() == "unix32" else "mpy"


def _run(path: Path, name: str, heap: str, tmp: str | None = None) -> subprocess.CompletedProcess[str]:
    exe, env = _interpreter(path)
    if tmp:
        env["MPY_TEST_TMP"] = tmp
    # cwd matters: MicroPython searches '' first, and the repo root would shadow the .mpy
    # tree with sources (compiled at import, at several times the RAM).
    return subprocess.run(
        [exe, "-X", f"heapsize={heap}", str(RUNNER), str(path), name],
        env=env, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp or tempfile.gettempdir(),
    )


class MpyFile(pytest.File):
    def collect(self):  # type: ignore[no-untyped-def]
        heap = _heapsize(self.path)
        listing = _run(self.path, "--list", "4M")
        if listing.returncode != 0:
            raise MpyTestFailure(
                f"{self.path} does not import under MicroPython:\n{listing.stdout}{listing.stderr}"
            )
        for name in listing.stdout.split():
            yield MpyItem.from_parent(self, name=f"{name}[{_suffix()}]", func=name, heap=heap)


class MpyItem(pytest.Item):
    def __init__(self, *, func: str, heap: str, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.func = func
        self.heap = heap

    def runtest(self) -> None:
        with tempfile.TemporaryDirectory(prefix="mpytest-") as tmp:
            proc = _run(self.path, self.func, self.heap, tmp)
        # What the test printed (e.g. measured figures) shows with `pytest -rP`.
        self.add_report_section("call", "stdout", proc.stdout.replace("MPY-TEST-OK\n", ""))
        if proc.returncode != 0 or "MPY-TEST-OK" not in proc.stdout:
            raise MpyTestFailure(
                f"MicroPython {selected_image()} (heap {self.heap}) exit {proc.returncode}\n"
                f"{proc.stdout}{proc.stderr}"
            )

    def repr_failure(self, excinfo, style=None):  # type: ignore[no-untyped-def]
        if isinstance(excinfo.value, MpyTestFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):  # type: ignore[no-untyped-def]
        return self.path, None, f"{self.path.name}::{self.name}"


def _kind(path: Path) -> str | None:
    if path.suffix != ".py" or not path.name.startswith("test_"):
        return None
    return path.parent.name if path.parent.name in ("device", "shared") else None


def pytest_pycollect_makemodule(module_path: Path, parent):  # type: ignore[no-untyped-def]
    """Device-only tests are not imported by CPython at all."""
    if _kind(module_path) == "device":
        return MpyFile.from_parent(parent, path=module_path)
    return None


def pytest_collect_file(file_path: Path, parent):  # type: ignore[no-untyped-def]
    """Shared tests also get a MicroPython run, beside the normal CPython module."""
    if _kind(file_path) == "shared":
        return MpyFile.from_parent(parent, path=file_path, name=f"{file_path.name}[{_suffix()}]")
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On another image the CPython halves of the shared tests would only repeat themselves."""
    if selected_image() == "pypi":
        return
    keep, drop = [], []
    for item in items:
        (drop if _kind(item.path) == "shared" and not isinstance(item, MpyItem) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
