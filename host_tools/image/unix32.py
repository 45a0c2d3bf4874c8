"""Build the 32-bit unix-port MicroPython with the application frozen in (`doorctl build unix32`).

The build runs in one persistent object directory (`build/unix32/obj`), so make only redoes
what changed; the finished binary is copied to `build/unix32/micropython` with `image.json`
beside it holding the cache key (a `--manifest` build goes to `build/unix32-custom/`). The
same key again means nothing is run at all.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from host_tools.boards import board_named
from host_tools.errors import EXIT_USAGE, UserError
from host_tools.image.cachekey import cache_key, files_under
from host_tools.image.lock import build_lock
from host_tools.image.source import MICROPY_VERSION, build_mpy_cross, micropython_source
from host_tools.image.steps import Steps
from host_tools.paths import DEVICE_PACKAGES, REPO_ROOT

BOARD_DIR = REPO_ROOT / "board" / "unix32"
MANIFEST = BOARD_DIR / "manifest.py"
# The board's drivers in C (the flash simulator; board/unix32/cmodules/vboard): as on the
# ESP32, what the board's drivers do costs the MicroPython heap nothing.
CMODULES = BOARD_DIR / "cmodules"
# C modules more than one image builds (board/cmodules/doorcrypto), named by each board's makefiles.
SHARED_CMODULES = REPO_ROOT / "board" / "cmodules"
OUT_DIR = REPO_ROOT / "build" / "unix32"
# A build from another manifest (`--manifest`) never replaces the board's image.
CUSTOM_OUT_DIR = REPO_ROOT / "build" / "unix32-custom"
# The checked recipe (shared/vendor/README.md): -m32 makes it a 32-bit build; no libffi/btree.
MAKE_SETTINGS = ("VARIANT=standard", "MICROPY_PY_FFI=0", "MICROPY_PY_BTREE=0",
                 "CFLAGS_EXTRA=-m32", "LDFLAGS_EXTRA=-m32")


@dataclass(frozen=True)
class Image:
    binary: Path
    key: str
    built: bool  # False: the cached binary was current


def image_inputs() -> list[Path]:
    """Every file whose content changes the image: manifests, frozen sources, and the reader
    of the boards' declarations the manifests use."""
    return files_under(REPO_ROOT / "board", *(REPO_ROOT / p for p in DEVICE_PACKAGES if p != "board"),
                       REPO_ROOT / "host_tools" / "boards.py")


def unix32_inputs() -> list[Path]:
    """The image's inputs and the board's C modules (sources, headers, makefiles)."""
    return [*image_inputs(), *files_under(CMODULES, SHARED_CMODULES, suffixes=(".c", ".h", ".mk"))]


def current_key(tree: Path) -> str:
    return cache_key(unix32_inputs(), REPO_ROOT,
                     settings=(f"micropython {MICROPY_VERSION} {tree.parent.name}", *MAKE_SETTINGS))


def check_manifest(tree: Path, manifest: Path, steps: Steps) -> None:
    """Run MicroPython's manifest tool alone first: a broken manifest is one line, not a make log."""
    import sys

    sys.path.insert(0, str(tree / "tools"))
    try:
        import manifestfile
    finally:
        sys.path.pop(0)
    with steps.step("manifest"):
        m = manifestfile.ManifestFile(manifestfile.MODE_FREEZE, {
            "MPY_DIR": str(tree), "MPY_LIB_DIR": str(tree / "lib" / "micropython-lib"),
            "PORT_DIR": str(tree / "ports" / "unix"), "BOARD_DIR": str(manifest.parent)})
        cwd = os.getcwd()
        try:
            m.execute(str(manifest))
        except manifestfile.ManifestFileError as e:
            # Nested includes repeat the prefix: keep the innermost file and its error.
            inner = str(e).split("Error in manifest file: ")[-1]
            raise UserError(f"broken manifest {manifest}: {inner}", EXIT_USAGE) from None
        finally:
            os.chdir(cwd)
        frozen = {f.target_path for f in m.files()}
        missing = [p for p in board_named("virtual").packages if f"{p}/__init__.py" not in frozen]
        if missing:
            raise UserError(f"broken manifest {manifest}: it does not freeze {', '.join(missing)} "
                            "(include board/manifest.py)", EXIT_USAGE)
        steps.say(f"   {len(frozen)} files to freeze")



def cached_image(out_dir: Path = OUT_DIR) -> Image | None:
    """The built binary if it exists and its record is readable (not checked for freshness)."""
    try:
        record = json.loads((out_dir / "image.json").read_text())
    except (OSError, ValueError):
        return None
    binary = out_dir / "micropython"
    return Image(binary, str(record.get("key", "")), False) if binary.is_file() else None


def _fresh_objects(obj: Path) -> None:
    """make does not recompile when only compiler flags change: a changed module makefile or
    make line starts from a clean object directory (as the mcu build does)."""
    flags = cache_key(files_under(CMODULES, suffixes=(".mk",)), REPO_ROOT, MAKE_SETTINGS)
    stamp = obj / ".flags"
    if obj.exists() and (not stamp.is_file() or stamp.read_text() != flags):
        shutil.rmtree(obj)
    obj.mkdir(parents=True, exist_ok=True)
    stamp.write_text(flags)


def build_unix32(steps: Steps | None = None, manifest: Path = MANIFEST, force: bool = False) -> Image:
    """Build (or reuse) the unix32 image; returns where it is."""
    steps = steps or Steps()
    tree = micropython_source(steps)
    if manifest == MANIFEST:
        out_dir, key = OUT_DIR, current_key(tree)
    else:
        out_dir = CUSTOM_OUT_DIR
        key = cache_key([*unix32_inputs(), manifest], REPO_ROOT,
                        settings=(str(manifest), tree.parent.name, *MAKE_SETTINGS))
    binary, record = out_dir / "micropython", out_dir / "image.json"
    with build_lock(out_dir):
        cached = cached_image(out_dir)
        if cached is not None and cached.key == key and not force:
            steps.say(f"== unix32 image is current ({binary.relative_to(REPO_ROOT)}, key {key[:12]})")
            return cached
        check_manifest(tree, manifest, steps)
        mpy_cross = build_mpy_cross(tree, steps)
        obj = out_dir / "obj"
        _fresh_objects(obj)
        # MicroPython's makemanifest rewrites frozen_content.c only when a frozen source is
        # newer than it, so a module taken out of the manifest would stay in the image: the
        # key changed, so the frozen content is made again.
        (obj / "frozen_content.c").unlink(missing_ok=True)
        steps.run("unix32 firmware (make)", [
            "make", "-C", str(tree / "ports" / "unix"), f"-j{os.cpu_count() or 1}",
            *MAKE_SETTINGS, f"BUILD={obj}", f"FROZEN_MANIFEST={manifest}",
            f"USER_C_MODULES={CMODULES}", f"MICROPY_MPYCROSS={mpy_cross}"])
        with steps.step("install"):
            tmp = binary.with_name(f".micropython.{os.getpid()}.tmp")
            shutil.copy2(obj / "micropython", tmp)
            os.replace(tmp, binary)
            record.write_text(json.dumps({"key": key, "micropython": MICROPY_VERSION,
                                          "source": str(tree), "manifest": str(manifest),
                                          "bytes": binary.stat().st_size}, indent=1))
        steps.say(f"== built {binary.relative_to(REPO_ROOT)} ({binary.stat().st_size // 1024} KiB)")
        return Image(binary, key, True)
