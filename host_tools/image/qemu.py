"""Run a script on the mcu image under qemu-system-arm (`doorctl mcu run`).

The script is not typed into a console: it is put into the board's memory with QEMU's
`-device loader` and the image runs it from reset (board/mcu/cmodules/mps2/script_boot.c),
with no console input at all. With `-icount shift=6` the guest clock advances exactly 64 ns
per instruction, so `mps2.insn()` counts instructions and a run repeats itself exactly.
Output is the board's UART; the exit status is the script's (SystemExit's code, 1 after an
uncaught exception).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from host_tools.errors import EXIT_MISSING_TOOL, EXIT_USAGE, UserError

SCRIPT_MAGIC = 0x31534344  # "DCS1"
SCRIPT_ADDR = 0x21000000  # board/mcu/cmodules/mps2/mps2.h
SCRIPT_MAX = 0x80000  # the script area's first half: the script and its arguments
FILES_ADDR = 0x21080000  # its second half: files for the script's filesystem
FILES_MAX = 0x80000 - 64  # the last 64 bytes hold the instruction clock's state
# Where `with_files` puts its littlefs: mps2.Flash offsets past the board's own partitions.
FILES_FS_OFFSET = 6 * 1024 * 1024
FILES_FS_SIZE = 9 * 1024 * 1024
HEAP_MAX = 4 * 1024 * 1024
ICOUNT_SHIFT = 6  # MPS2_ICOUNT_SHIFT in mps2.h
QEMU_HINT = "qemu-system-arm is not installed (Debian: apt-get install qemu-system-arm)"


@dataclass(frozen=True)
class Run:
    status: int
    output: str


def parse_size(text: str) -> int:
    """`64K`, `1M` or bytes -> bytes."""
    t = text.strip().upper()
    mult = 1024 if t.endswith("K") else 1024 * 1024 if t.endswith("M") else 1
    try:
        value = int(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise UserError(f"heap size {text!r} is not a number of bytes, K or M", EXIT_USAGE) from None
    if not 8192 <= value <= HEAP_MAX:
        raise UserError(f"heap size {text} is outside 8K..4M", EXIT_USAGE)
    return value


def script_blob(source: bytes, heap: int, argv: list[str]) -> bytes:
    """The header the image's script boot reads, then argv and the source."""
    args = b"".join(a.encode() + b"\0" for a in argv)
    blob = struct.pack("<4I", SCRIPT_MAGIC, heap, len(args), len(source)) + args + source
    if len(blob) > SCRIPT_MAX:
        raise UserError(f"script and arguments are {len(blob)} bytes, more than the "
                        f"{SCRIPT_MAX} the board's script area holds", EXIT_USAGE)
    return blob


def with_files(source: bytes, files: dict[str, bytes]) -> tuple[bytes, bytes]:
    """`source` preceded by a prelude that formats a littlefs at / holding `files` (absolute
    paths; a /tmp folder too), read from the board's memory; and the bytes to load there."""
    table, archive = [], b""
    for path, data in sorted(files.items()):
        if not path.startswith("/"):
            raise ValueError(f"file path {path} is not absolute")
        table.append((path, FILES_ADDR + len(archive), len(data)))
        archive += data
    if len(archive) > FILES_MAX:
        raise UserError(f"files for the script are {len(archive)} bytes, more than the "
                        f"{FILES_MAX} the board's script area holds", EXIT_USAGE)
    prelude = f"""def _mcu_files(table):
    import mps2, os, uctypes, vfs
    dev = mps2.Flash({FILES_FS_OFFSET}, {FILES_FS_SIZE})
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/")
    os.mkdir("/tmp")
    for path, addr, n in table:
        parts = path.split("/")
        for i in range(2, len(parts)):
            try:
                os.mkdir("/".join(parts[:i]))
            except OSError:
                pass
        with open(path, "wb") as f:
            f.write(uctypes.bytearray_at(addr, n))
_mcu_files({tuple(table)!r})
del _mcu_files
"""
    return prelude.encode() + source, archive


def qemu_command(elf: Path, blob: Path | None = None, files: Path | None = None) -> list[str]:
    cmd = ["qemu-system-arm", "-machine", "mps2-an385", "-nographic", "-monitor", "null",
           "-semihosting", "-serial", "stdio", "-icount", f"shift={ICOUNT_SHIFT}",
           "-kernel", str(elf)]
    if blob is not None:
        cmd += ["-device", f"loader,file={blob},addr={SCRIPT_ADDR:#x},force-raw=on"]
    if files is not None:
        cmd += ["-device", f"loader,file={files},addr={FILES_ADDR:#x},force-raw=on"]
    return cmd


def run_source(elf: Path, source: bytes, argv: list[str] | None = None, heap: int = 65536,
               timeout: float = 600.0, files: dict[str, bytes] | None = None,
               name: str = "script.py") -> Run:
    """Run `source` on the image in `elf` from reset; its output and exit status. `argv` is
    its sys.argv[1:] (sys.argv[0] is `name`). With `files`, the script starts on a littlefs
    at / holding them (see `with_files`)."""
    if shutil.which("qemu-system-arm") is None:
        raise UserError(QEMU_HINT, EXIT_MISSING_TOOL)
    with tempfile.TemporaryDirectory(prefix="mcu-run-") as tmp:
        blob = Path(tmp) / "script.bin"
        archive = None
        if files:
            source, data = with_files(source, files)
            archive = Path(tmp) / "files.bin"
            archive.write_bytes(data)
        blob.write_bytes(script_blob(source, heap, [name, *(argv or [])]))
        try:
            proc = subprocess.run(qemu_command(elf, blob, archive), stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"the script did not finish within {timeout:.0f} s on the mcu "
                            "image") from None
    output = proc.stdout.decode("utf-8", "replace").replace("\r\n", "\n")
    err = proc.stderr.decode("utf-8", "replace").strip()
    if err and proc.returncode != 0 and not output:
        output = err + "\n"
    return Run(proc.returncode, output)
