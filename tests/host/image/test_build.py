"""The image build: finding the MicroPython source, cache keys, named failing steps,
and `doorctl build unix32` on the vendored tree (a real 32-bit build, cached in build/)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from host_tools.errors import UserError
from host_tools.image import source
from host_tools.image.cachekey import cache_key, files_under
from host_tools.image.steps import Steps

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
HAVE_SOURCE = bool(os.environ.get("MICROPY_SRC")) or source.vendored_tarball() is not None
needs_source = pytest.mark.skipif(not HAVE_SOURCE, reason="no MicroPython v1.28.0 source here")


def _one_line(text: str) -> str:
    """The one error line (progress lines `==` and their timings may precede it)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if not ln.lstrip().startswith("==") and " done in " not in ln]
    assert len(errors) == 1 and errors[0] == lines[-1], text
    return errors[0]


def test_no_source_anywhere_says_where_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MICROPY_SRC", raising=False)
    with pytest.raises(UserError) as e:
        source.micropython_source(repo_root=tmp_path / "repo", dest_root=tmp_path / "build")
    msg = str(e.value)
    assert "\n" not in msg
    assert "git clone --branch v1.28.0 https://github.com/micropython/micropython" in msg
    assert "make -C micropython/ports/unix submodules" in msg


def test_micropy_src_that_is_not_micropython_is_refused(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROPY_SRC", str(tmp_path))
    with pytest.raises(UserError, match="not a MicroPython source tree"):
        source.micropython_source()


def test_micropy_src_of_another_release_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "py").mkdir()
    (tmp_path / "py" / "mpconfig.h").write_text(
        "#define MICROPY_VERSION_MAJOR 1\n#define MICROPY_VERSION_MINOR 22\n"
        "#define MICROPY_VERSION_MICRO 0\n")
    monkeypatch.setenv("MICROPY_SRC", str(tmp_path))
    with pytest.raises(UserError, match="is MicroPython 1.22.0"):
        source.micropython_source()


def test_a_tarball_that_is_not_the_vendored_one_is_not_used(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MICROPY_SRC", raising=False)
    vendor = tmp_path / "shared" / "vendor"
    vendor.mkdir(parents=True)
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        info = tarfile.TarInfo("micropython-1.28.0/README.md")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    (vendor / source.TARBALL_NAME).write_bytes(data.getvalue())
    with pytest.raises(UserError, match="is not the vendored v1.28.0 tarball"):
        source.micropython_source(repo_root=tmp_path / "repo", dest_root=tmp_path / "build")
    assert not (tmp_path / "build").exists() or not any((tmp_path / "build").iterdir())


@needs_source
def test_vendored_tarball_is_extracted_once_and_accepted_as_micropy_src(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MICROPY_SRC", raising=False)
    tree = source.micropython_source(Steps(quiet=True))
    assert (tree / "py" / "mpconfig.h").is_file()
    stamp = (tree / "py").stat().st_mtime_ns
    assert source.micropython_source(Steps(quiet=True)) == tree
    assert (tree / "py").stat().st_mtime_ns == stamp  # not extracted again
    monkeypatch.setenv("MICROPY_SRC", str(tree))
    assert source.micropython_source() == tree


def test_cache_key_follows_content_paths_and_settings(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    a = tmp_path / "pkg" / "a.py"
    a.write_text("x = 1\n")
    (tmp_path / "pkg" / "notes.txt").write_text("not frozen")
    files = files_under(tmp_path / "pkg")
    assert files == [a]
    key = cache_key(files, tmp_path)
    assert cache_key(files_under(tmp_path / "pkg"), tmp_path) == key
    assert cache_key(files, tmp_path, settings=("CFLAGS_EXTRA=-m32",)) != key
    a.write_text("x = 2\n")
    assert cache_key(files, tmp_path) != key
    a.write_text("x = 1\n")
    a.rename(tmp_path / "pkg" / "b.py")
    assert cache_key(files_under(tmp_path / "pkg"), tmp_path) != key
    assert len(key) == len(hashlib.sha256().hexdigest())


def test_a_failing_step_is_named_with_its_error_line(tmp_path: Path) -> None:
    out = io.StringIO()
    steps = Steps(log=tmp_path / "build.log", out=out)
    with pytest.raises(UserError) as e:
        steps.run("compile the widget", [sys.executable, "-c",
                                          "import sys; print('x.c:1: error: no widget'); sys.exit(3)"])
    msg = str(e.value)
    assert msg.startswith("build step 'compile the widget' failed (exit 3): x.c:1: error: no widget")
    assert str(tmp_path / "build.log") in msg
    assert "== compile the widget" in out.getvalue()


def test_a_step_needing_a_missing_program_says_so(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="build step 'cc' needs no-such-compiler-here"):
        Steps(log=tmp_path / "l", quiet=True).run("cc", ["no-such-compiler-here"])


def test_build_without_source_is_one_line_and_fails(tmp_path: Path) -> None:
    env = dict(os.environ, MICROPY_SRC=str(tmp_path / "nothing"))
    proc = subprocess.run([DOORCTL, "build", "unix32"], capture_output=True, text=True, env=env)
    assert proc.returncode == 5
    assert _one_line(proc.stderr).startswith("error: MICROPY_SRC ")


@needs_source
@pytest.mark.parametrize("text", ['include("no_such_manifest.py")\n', "package(\n",
                                  'include("$(MPY_DIR)/extmod/asyncio")\n'])
def test_build_with_broken_manifest_is_one_line_and_fails(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "manifest.py"
    bad.write_text(text)
    proc = subprocess.run([DOORCTL, "build", "unix32", "--manifest", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert _one_line(proc.stderr).startswith(f"error: broken manifest {bad}")
    assert not (tmp_path / "micropython").exists()


def _frozen_run(binary: Path, probe: str) -> list[str]:
    """The words `probe` prints on the image in a 64 KiB heap, with only its frozen modules on
    the path and / as the directory (no file it could import instead)."""
    proc = subprocess.run([str(binary), "-X", "heapsize=64K", "-c", probe],
                          capture_output=True, text=True, cwd="/", timeout=30,
                          env={"MICROPYPATH": ".frozen"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@needs_source
def test_unix32_is_a_32bit_micropython_with_the_application_frozen(unix32_binary: Path) -> None:
    probe = ("import sys\nprint(sys.maxsize)\n"
             "import firmware.main, crypto.ev2, offline_cache.cache, board.virtual, asyncio\n"
             "print(firmware.main.__file__)\n")
    words = _frozen_run(unix32_binary, probe)
    maxsize, where = words
    assert maxsize == str(2**31 - 1)
    # Frozen modules are named by their path in the manifest; with only .frozen on the path
    # and / as the directory, there is no file it could have come from.
    assert where == "firmware/main.py"


@needs_source
def test_unix32_leaves_out_the_modules_only_the_host_runs(unix32_binary: Path) -> None:
    """host_tools/boards.py HOST_SIDE; a stale build kept them after they left the manifest."""
    probe = ("import wire.common\nfor n in ('wire.platform', 'wire.names'):\n"
             "    try:\n        __import__(n)\n        print('FROZEN', n)\n"
             "    except ImportError:\n        print('NOT', n)\n")
    words = _frozen_run(unix32_binary, probe)
    assert words == ["NOT", "wire.platform", "NOT", "wire.names"]


def test_the_unix32_key_covers_the_boards_c_modules() -> None:
    from host_tools.image.unix32 import CMODULES, unix32_inputs

    inputs = set(unix32_inputs())
    assert CMODULES / "vboard" / "modvboard.c" in inputs
    assert CMODULES / "vboard" / "micropython.mk" in inputs


def test_both_image_keys_cover_the_shared_crypto_modules() -> None:
    from host_tools.image import mcu
    from host_tools.image.unix32 import CMODULES, SHARED_CMODULES, unix32_inputs

    for name in ("modaes128.c", "modhmacsha256.c"):
        shared = SHARED_CMODULES / "doorcrypto" / name
        assert shared in set(unix32_inputs()) and shared in set(mcu.mcu_inputs())
    assert CMODULES / "doorcrypto" / "micropython.mk" in set(unix32_inputs())
    assert mcu.CMODULES / "doorcrypto" / "micropython.mk" in set(mcu.mcu_inputs())


def test_a_shared_c_module_is_named_by_its_absolute_path() -> None:
    # MicroPython puts a user module's object at $(BUILD)/ + its path relative to
    # USER_C_MODULES: a shared source named through ".." left $(BUILD), and the mcu build's
    # ARM object was then linked into the next unix32 build.
    from host_tools.image import mcu
    from host_tools.image.unix32 import CMODULES

    for folder in (CMODULES, mcu.CMODULES):
        mk = (folder / "doorcrypto" / "micropython.mk").read_text()
        assert "DOORCRYPTO_DIR := $(abspath $(USERMOD_DIR)/../../../cmodules/doorcrypto)" in mk
        lines = [ln for ln in mk.splitlines() if ln.startswith("SRC_USERMOD_C")]
        assert len(lines) == 2 and all("+= $(DOORCRYPTO_DIR)/" in ln for ln in lines), folder


@needs_source
def test_on_unix32_an_aes_key_holds_no_cryptolib_object(unix32_binary: Path) -> None:
    """crypto/aes.py takes the image's aes128 module: a key is its 16 bytes, not a 304-byte
    cryptolib object per key, direction and CBC chain (board/cmodules/doorcrypto)."""
    probe = ("import gc\nfrom crypto import aes\nk = aes.AES(bytes(16))\nk.encrypt_block(bytes(16))\n"
             "k.decrypt_block(bytes(16))\nprint(aes._cbc is not None, k._enc, k._dec)\n"
             "iv, data, x = bytes(16), bytes(64), None\n"
             "gc.collect()\nb = gc.mem_alloc()\nx = k.cbc(iv, data)\n"
             "print(gc.mem_alloc() - b)\n")
    words = _frozen_run(unix32_binary, probe)
    used = words
    assert used[:3] == ["True", "None", "None"]
    assert int(used[3]) <= 128  # the 64-byte result and its object; cryptolib: 304 bytes more


@needs_source
def test_unix32_board_uses_the_c_flash_simulator(unix32_binary: Path) -> None:
    """On the image the board's flash simulator is the C type: its class and objects take
    nothing from the heap but the object (docs/flash-simulator.md)."""
    probe = ("import vboard\nfrom board.vdev import flashsim\n"
             "print(flashsim.FlashSim is vboard.FlashSim, flashsim.PowerCut is vboard.PowerCut)\n"
             "import sys\nprint('board.vdev.flashsim_py' in sys.modules)\n")
    words = _frozen_run(unix32_binary, probe)
    assert words == ["True", "True", "False"]
