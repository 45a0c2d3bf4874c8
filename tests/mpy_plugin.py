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
With `--image mcu` they are `name[mcu]` and run on the bare-metal image under QEMU
(`doorctl mcu run`): one run from reset per test, the test file and the host helpers it
imports on a fresh littlefs, the heap the file asks for. Tests the bare-metal board cannot
run (no network, no TLS) are skipped with their reason (MCU_SKIPS).
A test gets a private scratch directory in the environment variable MPY_TEST_TMP (on the
bare-metal board, which has no environment, /tmp on its fresh filesystem).
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
    return {"unix32": "unix32", "mcu": "mcu"}.get(selected_image(), "mpy")


# What the bare-metal board cannot run, with the reason (file, or file::function).
MCU_SKIPS = {
    "test_esp32_board.py": "the ESP32 board's module is not in the bare-metal image (each image "
    "freezes its own board)",
    "test_tlsconf.py::test_context_loads_the_ca_and_the_client_certificate": "no tls module: the "
    "uplink (MQTT over TLS) is not part of the bare-metal build",
    "test_uplink_event.py::test_a_time_stamped_by_an_untrusted_clock_keeps_its_flag_and_its_"
    "milliseconds": "the board has single-precision floats, as the ESP32 port has: the test's "
    "clock gives epoch seconds as a float, which keeps 128 s resolution there (a defect of "
    "float clocks on such boards, open)",
    "test_flashsim.py::test_image_file_is_the_raw_flash_contents__python": "the simulator's image file "
    "is read back while open: littlefs shows a file's writes to another handle only after a "
    "flush (the board's own flash is mps2.Flash, not this simulator)",
}
# Host modules the shared tests import, put on the board's filesystem beside the test.
MCU_HELPERS = ("tests/__init__.py", "tests/scratch.py", "tests/pn532_script.py", "tests/clock.py",
               "tests/door_board.py",
               "tests/cache_cards.py",
               "tests/tick_vectors.py", "host_tools/__init__.py", "host_tools/pn532_sync.py",
               "host_tools/cache_build.py",
               "host_tools/cards/__init__.py", "host_tools/cards/desfire.py")
_mcu_elf: list[Path] = []


def _host_side(path: Path) -> dict[str, bytes]:
    """The host-side modules of the shared packages this test imports (host_tools/boards.py
    HOST_SIDE: never frozen into an image, so not found in a frozen package on one), as files
    for the test's directory: each source under a flat name (wire__platform.py) and their
    list, mpy_host_side.py, which tests/mpy_runner.py loads them from. Empty off an image:
    there the .mpy tree holds the packages whole."""
    from host_tools.boards import HOST_SIDE

    if selected_image() == "pypi":
        return {}
    text = path.read_text()
    wanted = [rel for rel in HOST_SIDE if rel[:-3].replace("/", ".") in text]
    if not wanted:
        return {}
    files = {rel[:-3].replace("/", "__") + ".py": (REPO_ROOT / rel).read_bytes() for rel in wanted}
    names = ", ".join(repr(rel[:-3].replace("/", ".")) for rel in wanted)
    files["mpy_host_side.py"] = f"MODULES = ({names},)\n".encode()
    return files


def _run_mcu(path: Path, name: str, heap: str) -> subprocess.CompletedProcess[str]:
    from host_tools.errors import UserError
    from host_tools.image.mcu import build_mcu
    from host_tools.image.qemu import parse_size, run_source
    from host_tools.image.steps import Steps

    try:
        if not _mcu_elf:
            _mcu_elf.append(build_mcu(Steps(quiet=True)).elf)
        files = {"/" + rel: (REPO_ROOT / rel).read_bytes() for rel in MCU_HELPERS}
        files["/t/" + path.name] = path.read_bytes()
        files.update({"/t/" + name: data for name, data in _host_side(path).items()})
        run = run_source(_mcu_elf[0], RUNNER.read_bytes(), ["/t/" + path.name, name],
                         parse_size(heap), TIMEOUT_S, files, name=RUNNER.name)
    except UserError as e:
        return subprocess.CompletedProcess([], 1, "", f"mcu: {e}\n")
    return subprocess.CompletedProcess([], run.status, run.output, "")


def _run(path: Path, name: str, heap: str, tmp: str | None = None) -> subprocess.CompletedProcess[str]:
    if selected_image() == "mcu":
        return _run_mcu(path, name, heap)
    exe, env = _interpreter(path)
    if tmp:
        env["MPY_TEST_TMP"] = tmp
    with tempfile.TemporaryDirectory(prefix="mpy-host-side-") as folder:
        host_side = _host_side(path)
        for file, data in host_side.items():
            (Path(folder) / file).write_bytes(data)
        if host_side:
            env["MICROPYPATH"] = f"{folder}:{env['MICROPYPATH']}"
        # cwd matters: MicroPython searches '' first, and the repo root would shadow the .mpy
        # tree with sources (compiled at import, at several times the RAM).
        return subprocess.run(
            [exe, "-X", f"heapsize={heap}", str(RUNNER), str(path), name],
            env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
            cwd=tmp or tempfile.gettempdir(),
        )


class MpyFile(pytest.File):
    def collect(self):  # type: ignore[no-untyped-def]
        heap = _heapsize(self.path)
        if selected_image() == "mcu" and self.path.name in MCU_SKIPS:
            item = MpyItem.from_parent(self, name="[mcu]", func="", heap=heap)
            item.add_marker(pytest.mark.skip(reason=f"mcu: {MCU_SKIPS[self.path.name]}"))
            yield item
            return
        listing = _run(self.path, "--list", "4M")
        if listing.returncode != 0:
            raise MpyTestFailure(
                f"{self.path} does not import under MicroPython:\n{listing.stdout}{listing.stderr}"
            )
        for name in listing.stdout.split():
            item = MpyItem.from_parent(self, name=f"{name}[{_suffix()}]", func=name, heap=heap)
            if selected_image() == "mcu":
                why = MCU_SKIPS.get(self.path.name) or MCU_SKIPS.get(f"{self.path.name}::{name}")
                if why:
                    item.add_marker(pytest.mark.skip(reason=f"mcu: {why}"))
            yield item


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
        return self.path, 0, f"{self.path.name}::{self.name}"


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
