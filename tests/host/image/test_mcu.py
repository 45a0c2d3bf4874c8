"""The bare-metal image (`doorctl build mcu`, `doorctl mcu run`): a real build of the qemu
port from the vendored tree, scripts run on it under qemu-system-arm from reset."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.errors import UserError
from host_tools.image import qemu, source

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
HAVE_TOOLS = (bool(os.environ.get("MICROPY_SRC")) or source.vendored_tarball() is not None) \
    and all(shutil.which(t) for t in ("arm-none-eabi-gcc", "qemu-system-arm"))
needs_image = pytest.mark.skipif(not HAVE_TOOLS, reason="no MicroPython source, Arm toolchain "
                                 "or qemu-system-arm here")


@pytest.fixture(scope="module")
def elf() -> Path:
    from host_tools.image.mcu import build_mcu
    from host_tools.image.steps import Steps

    return build_mcu(Steps(quiet=True)).elf


def run(elf: Path, src: str, *argv: str, heap: int = 65536) -> qemu.Run:
    return qemu.run_source(elf, src.encode(), list(argv), heap, timeout=120)


def test_script_blob_layout() -> None:
    blob = qemu.script_blob(b"print(1)", 65536, ["a", "bc"])
    magic, heap, argv_len, src_len = struct.unpack_from("<4I", blob)
    assert (magic, heap, argv_len, src_len) == (0x31534344, 65536, 5, 8)
    assert blob[16:] == b"a\0bc\0print(1)"


def test_script_too_big_for_its_area_is_refused() -> None:
    with pytest.raises(UserError, match="script area"):
        qemu.script_blob(b"#" * qemu.SCRIPT_MAX, 65536, [])


@pytest.mark.parametrize("text", ["12", "5M", "lots", "-64K"])
def test_heap_sizes_outside_the_board_are_refused(text: str) -> None:
    with pytest.raises(UserError):
        qemu.parse_size(text)


def test_heap_sizes() -> None:
    assert qemu.parse_size("64K") == 65536
    assert qemu.parse_size("1M") == 1 << 20


@needs_image
def test_script_output_argv_and_exit_status(elf: Path) -> None:
    r = run(elf, "import sys\nprint('args', sys.argv)\nsys.exit(3)\n", "x", "y")
    assert r.status == 3
    assert "args ['script.py', 'x', 'y']" in r.output


@needs_image
def test_uncaught_exception_prints_traceback_and_fails(elf: Path) -> None:
    r = run(elf, "raise ValueError('boom')\n")
    assert r.status == 1
    assert "ValueError: boom" in r.output


@needs_image
def test_heap_is_the_one_asked_for(elf: Path) -> None:
    src = "import gc\ngc.collect()\nprint(gc.mem_free() + gc.mem_alloc())\n"
    small = int(run(elf, src, heap=32768).output.split()[-1])
    big = int(run(elf, src, heap=262144).output.split()[-1])
    assert 30000 < small <= 32768 < 250000 < big <= 262144


@needs_image
def test_the_modules_only_the_host_runs_are_not_frozen(elf: Path) -> None:
    """host_tools/boards.py HOST_SIDE; a stale build kept them after they left the manifest."""
    src = """
import wire.common
for name in ("wire.platform", "wire.names"):
    try:
        __import__(name)
        print("FROZEN", name)
    except ImportError:
        print("NOT", name)
"""
    r = run(elf, src)
    assert r.status == 0, r.output
    assert "NOT wire.platform" in r.output and "NOT wire.names" in r.output, r.output


@needs_image
def test_application_is_frozen_with_crypto_and_littlefs(elf: Path) -> None:
    src = """
import cryptolib, hashlib, os
import firmware.door, offline_cache.cache, crypto.cmac, asyncio
from board.mcu_qemu import McuBoard
b = McuBoard()
b.mount()
with open('x', 'w') as f:
    f.write('kept')
print(open('/flash/x').read(), os.getcwd())
print(cryptolib.aes(bytes(16), 1).encrypt(bytes(16)).hex())
print(hashlib.sha256(b'abc').digest().hex()[:16])
"""
    r = run(elf, src)
    assert r.status == 0, r.output
    assert "kept /flash" in r.output
    assert "66e94bd4ef8a2c3b884cfa59ca342b2e" in r.output  # FIPS-197 AES-128, zero key/block
    assert "ba7816bf8f01cfea" in r.output


@needs_image
def test_instruction_counts_repeat_exactly(elf: Path) -> None:
    src = """
import mps2, hashlib
def work(n):
    h = hashlib.sha256()
    for i in range(n):
        h.update(b'%d' % i)
    return h.digest()
a = mps2.insn(); work(50); b = mps2.insn(); work(100); c = mps2.insn()
print(b - a, c - b)
"""
    first, second = run(elf, src), run(elf, src)
    assert first.status == 0, first.output
    counts = [int(v) for v in first.output.split()]
    assert counts[1] > counts[0] > 1000
    assert first.output == second.output


@needs_image
def test_doorctl_mcu_run(tmp_path: Path) -> None:
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint('on', sys.platform, sys.argv)\nsys.exit(2)\n")
    proc = subprocess.run([DOORCTL, "mcu", "run", str(script), "a"], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 2
    assert proc.stdout == "on qemu ['hello.py', 'a']\n"


def test_doorctl_mcu_run_missing_script_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([DOORCTL, "mcu", "run", str(tmp_path / "nope.py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "cannot read" in proc.stderr


def test_every_test_on_the_image_skips_where_it_cannot_be_built() -> None:
    """A test that takes the built image (`elf`) without `needs_image` errors on a machine with
    no Arm toolchain or qemu instead of skipping (one lost its mark when a test was added above
    it)."""
    import inspect

    on_image = [name for name, fn in sorted(globals().items())
                if name.startswith("test_") and callable(fn)
                and "elf" in inspect.signature(fn).parameters]
    assert on_image
    unmarked = [name for name in on_image
                if needs_image.mark not in getattr(globals()[name], "pytestmark", [])]
    assert unmarked == []
