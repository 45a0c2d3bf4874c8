"""Build the bare-metal image: MicroPython's qemu port for the MPS2-AN385 (Cortex-M3) with the
application frozen in (`doorctl build mcu`).

The vendored port is built unedited: the board's additions (cryptolib and SHA-256 from Mbed
TLS, littlefs's clock, the `mps2` module, the script boot) are a user C module in
`board/mcu/cmodules`, littlefs is switched on from the make line. Like unix32, one persistent
object directory (`build/mcu/obj`), the ELF copied to `build/mcu/firmware.elf` with
`image.json` holding the cache key and the section sizes; the same key again runs nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from host_tools.errors import EXIT_MISSING_TOOL, UserError
from host_tools.image.cachekey import cache_key, files_under
from host_tools.image.lock import build_lock
from host_tools.image.source import MICROPY_VERSION, build_mpy_cross, micropython_source
from host_tools.image.steps import Steps
from host_tools.image.unix32 import SHARED_CMODULES, check_manifest, image_inputs
from host_tools.paths import REPO_ROOT

BOARD_DIR = REPO_ROOT / "board" / "mcu"
MANIFEST = BOARD_DIR / "manifest.py"
CMODULES = BOARD_DIR / "cmodules"
OUT_DIR = REPO_ROOT / "build" / "mcu"
ELF_NAME = "firmware.elf"
# The REPL's heap; a script run by `doorctl mcu run` gets the heap its run asks for.
REPL_HEAP = 65536
MAKE_SETTINGS = ("BOARD=MPS2_AN385", "MICROPY_VFS_LFS2=1", f"MICROPY_HEAP_SIZE={REPL_HEAP}")
TOOLCHAIN_HINT = ("the mcu image needs the Arm bare-metal toolchain "
                  "(Debian: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)")


@dataclass(frozen=True)
class McuImage:
    elf: Path
    key: str
    built: bool  # False: the cached image was current
    sections: dict[str, int]  # text, data, bss bytes (arm-none-eabi-size)


def mcu_inputs() -> list[Path]:
    """The image's inputs and the C modules it builds (its own and the shared ones)."""
    return [*image_inputs(), *files_under(CMODULES, SHARED_CMODULES, suffixes=(".c", ".h", ".mk"))]


def current_key(tree: Path) -> str:
    inputs = mcu_inputs()
    return cache_key(inputs, REPO_ROOT,
                     settings=(f"micropython {MICROPY_VERSION} {tree.parent.name}", *MAKE_SETTINGS))


def section_sizes(elf: Path) -> dict[str, int]:
    """text/data/bss of `elf` (Berkeley format of arm-none-eabi-size)."""
    try:
        out = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True,
                             check=True).stdout
    except FileNotFoundError:
        raise UserError(TOOLCHAIN_HINT, EXIT_MISSING_TOOL) from None
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


def cached_image(out_dir: Path = OUT_DIR) -> McuImage | None:
    try:
        record = json.loads((out_dir / "image.json").read_text())
    except (OSError, ValueError):
        return None
    elf = out_dir / ELF_NAME
    if not elf.is_file():
        return None
    return McuImage(elf, str(record.get("key", "")), False, dict(record.get("sections", {})))



def is_current() -> bool:
    """True when build/mcu holds the image of today's manifest and sources."""
    cached = cached_image(OUT_DIR)
    if cached is None:
        return False
    try:
        return cached.key == current_key(micropython_source(Steps(quiet=True)))
    except UserError:
        return False


def build_mcu(steps: Steps | None = None, force: bool = False) -> McuImage:
    """Build (or reuse) the mcu image; returns where it is."""
    steps = steps or Steps()
    if shutil.which("arm-none-eabi-gcc") is None:
        raise UserError(TOOLCHAIN_HINT, EXIT_MISSING_TOOL)
    tree = micropython_source(steps)
    key = current_key(tree)
    elf, record = OUT_DIR / ELF_NAME, OUT_DIR / "image.json"
    with build_lock(OUT_DIR):
        cached = cached_image(OUT_DIR)
        if cached is not None and cached.key == key and not force:
            steps.say(f"== mcu image is current ({elf.relative_to(REPO_ROOT)}, key {key[:12]})")
            return cached
        check_manifest(tree, MANIFEST, steps)
        mpy_cross = build_mpy_cross(tree, steps)
        obj = OUT_DIR / "obj"
        # make does not recompile when only compiler flags change: a changed module makefile
        # or make line starts from a clean object directory.
        flags = cache_key(files_under(CMODULES, suffixes=(".mk",)), REPO_ROOT, MAKE_SETTINGS)
        stamp = obj / ".flags"
        if obj.exists() and (not stamp.is_file() or stamp.read_text() != flags):
            shutil.rmtree(obj)
        # MicroPython's makemanifest rewrites frozen_content.c only when a frozen source is
        # newer than it, so a module taken out of the manifest would stay in the image: the
        # key changed, so the frozen content is made again.
        (obj / "frozen_content.c").unlink(missing_ok=True)
        make = ["make", "-C", str(tree / "ports" / "qemu"), f"-j{os.cpu_count() or 1}",
                *MAKE_SETTINGS, f"BUILD={obj}", f"FROZEN_MANIFEST={MANIFEST}",
                f"USER_C_MODULES={CMODULES}", f"MICROPY_MPYCROSS={mpy_cross}"]
        try:
            steps.run("mcu firmware (make)", make)
        except UserError:
            if not obj.exists():
                raise
            # An incremental build can trip over stale generated qstrs (a name new to the C
            # module that frozen code already used): one clean build before giving up.
            shutil.rmtree(obj)
            steps.run("mcu firmware (clean make)", make)
        stamp.write_text(flags)
        with steps.step("install"):
            tmp = elf.with_name(f".{ELF_NAME}.{os.getpid()}.tmp")
            shutil.copy2(obj / ELF_NAME, tmp)
            os.replace(tmp, elf)
            sections = section_sizes(elf)
            record.write_text(json.dumps({"key": key, "micropython": MICROPY_VERSION,
                                          "source": str(tree), "sections": sections}, indent=1))
        steps.say(f"== built {elf.relative_to(REPO_ROOT)} (text {sections['text'] // 1024} KiB)")
        return McuImage(elf, key, True, sections)
