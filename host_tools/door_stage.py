"""One transaction on a door's flash, driven through its console with the real mpremote.

The host side of firmware/staging.py: every file goes beside its target as TARGET.stage
(where nothing reads it), is verified by hash, and one commit record, renamed into place,
switches the door over at its next boot. A file of any size is streamed in pieces of PIECE bytes, one
small console program each, so the door's heap never holds more than a piece whatever the
whitelist's size; an interrupted stream resumes where the door's copy stops matching.

A power cut or Ctrl-C at any step leaves the old door (no commit record) or the new one (the
record is there; boot finishes moving the files). The steps are exposed (`Transaction.steps`)
so the tests can cut the power after each of them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.console import mpremote
from host_tools.errors import EXIT_FAILED, UserError

SUFFIX = ".stage"  # firmware/staging.py
RECORD = "stage.json"
PIECE = 1536  # bytes per console program: 2 KiB of base64, small beside any door's heap
PIECES_PER_RUN = 32  # console programs per mpremote run (one step of the progress bar)
RUN_TIMEOUT_S = 60  # one run takes seconds: past this, the door is gone (power, cable)
SMALL = 16384  # files up to this size are copied whole (mpremote fs cp), not streamed

Progress = Callable[[int, int], None]  # (bytes on the door, total)

# Finishes a commit not yet applied (a cut during its boot, or a door stopped at its console
# before boot applied it: the record's rename was the switch, so the previous commissioning
# stands whole), then drops staged files this transaction does not reuse; reports whether the
# firmware applies staged files, the free flash, and what is staged already.
_BEGIN = """import os
try:
 import firmware.staging as st
 print('STAGING 1')
except ImportError:
 st=None
 print('STAGING 0')
try:os.remove('stage.json.tmp')
except OSError:pass
if st is not None and st.pending('.') is not None:print('FINISHED',st.complete('.'))
for d in ('','cache/'):
 try:l=os.listdir(d or '.')
 except OSError:l=()
 for n in l:
  if n.endswith('.stage'):
   if d+n[:-6] in %r:print('HAS',d+n[:-6],os.stat(d+n)[6])
   else:os.remove(d+n)
try:os.mkdir('cache')
except OSError:pass
s=os.statvfs('.')
print('FREE',s[0]*s[3])
"""

_HASH = """import os,hashlib,binascii
b=bytearray(512)
m=memoryview(b)
for p in %r:
 try:
  h=hashlib.sha256()
  with open(p+'.stage','rb') as f:
   while 1:
    n=f.readinto(b)
    if not n:break
    h.update(m[:n])
  print('H',binascii.hexlify(h.digest()).decode(),os.stat(p+'.stage')[6],p)
 except OSError:print('H - 0',p)
"""

_PREFIX_HASH = """import hashlib,binascii
b=bytearray(512)
m=memoryview(b)
h=hashlib.sha256()
left=%d
with open(%r,'rb') as f:
 while left:
  n=f.readinto(m[:min(512,left)])
  if not n:break
  h.update(m[:n])
  left-=n
print('P',binascii.hexlify(h.digest()).decode())
"""

_APPEND = "from binascii import a2b_base64 as d\nwith open(%r,'ab') as f:f.write(d(%r))"

_COMMIT = """import os
with open('stage.json.tmp','w') as f:f.write(%r)
os.rename('stage.json.tmp','stage.json')
print('COMMITTED')
"""


@dataclass
class Transaction:
    """New files for a door (target path -> content), and files the new door must not keep."""

    port: str
    files: dict[str, bytes]
    remove: list[str] = field(default_factory=list)
    progress: Progress | None = None
    resumed_from: dict[str, int] = field(default_factory=dict)  # target -> bytes already there
    _have: dict[str, int] = field(default_factory=dict)

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        """The transaction as named steps, in order; the door switches in the last one."""
        out: list[tuple[str, Callable[[], None]]] = [("begin", self.begin)]
        total = sum(len(d) for d in self.files.values())
        done = 0
        for target, data in self.files.items():
            out.append((f"stage {target}", _bound(self.stage, target, done, total)))
            done += len(data)
        out.append(("verify", self.verify))
        out.append(("commit", self.commit))
        return out

    def run(self) -> None:
        for _, step in self.steps():
            step()

    def begin(self) -> None:
        """Finish a commit not yet applied (never drop it: its files may be half moved), check
        the door can take a staged transaction and has room for it."""
        out = mpremote(self.port, "exec", _BEGIN % (list(self.files),), timeout=RUN_TIMEOUT_S)
        if "STAGING 1" not in out:
            raise UserError(f"the firmware on {self.port} cannot apply a staged commissioning: "
                            "run `doorctl deploy` first", EXIT_FAILED)
        free = next((int(ln.split()[1]) for ln in out.splitlines() if ln.startswith("FREE ")), 0)
        self._have = {}
        for ln in out.splitlines():
            parts = ln.split()
            if parts[:1] == ["HAS"] and len(parts) == 3 and parts[2].isdigit():
                self._have[parts[1]] = int(parts[2])
        need = sum(len(d) for d in self.files.values())
        reusable = sum(self._have.values())
        # littlefs needs spare blocks for its metadata and copy-on-write: keep 5 % + 16 KiB.
        if need - reusable > free * 0.95 - 16384:
            raise UserError(f"the door on {self.port} has {free // 1024} KiB of flash free, and "
                            f"this commissioning needs {need // 1024} KiB beside what it holds: "
                            "use a smaller whitelist, or commission a blank door", EXIT_FAILED)

    def stage(self, target: str, before: int = 0, total: int = 0) -> None:
        """Stream one file to TARGET.stage, resuming after the longest prefix the door already has."""
        data = self.files[target]
        path = target + SUFFIX
        if len(data) <= SMALL:
            # Keys and passwords go through a private file, never on a command line (which
            # other local users can read in the process list).
            with tempfile.TemporaryDirectory(prefix="doorctl-stage-") as tmp:
                src = Path(tmp) / "f"
                src.write_bytes(data)
                mpremote(self.port, "fs", "cp", "-f", str(src), ":" + path, timeout=RUN_TIMEOUT_S)
            self.resumed_from[target] = 0
            if self.progress:
                self.progress(before + len(data), total)
            return
        start = self._resume_point(path, data, self._have.get(target, 0))
        self.resumed_from[target] = start
        if start == 0:
            mpremote(self.port, "exec", f"open({path!r},'wb').close()", timeout=RUN_TIMEOUT_S)
        if self.progress:
            self.progress(before + start, total)
        pos = start
        while pos < len(data):
            args: list[str] = []
            for _ in range(PIECES_PER_RUN):
                if pos >= len(data):
                    break
                piece = base64.b64encode(data[pos:pos + PIECE]).decode()
                if args:
                    args.append("+")
                args += ["exec", _APPEND % (path, piece)]
                pos += PIECE
            # Appends: a run cut by a MemoryError is not run again (resume finds the prefix).
            mpremote(self.port, *args, timeout=RUN_TIMEOUT_S, idempotent=False)
            if self.progress:
                self.progress(before + min(pos, len(data)), total)

    def _resume_point(self, path: str, data: bytes, have: int) -> int:
        """Bytes of `data` the door's staged file already holds (0: start again)."""
        if have == 0 or have > len(data):
            return 0
        if have < len(data):
            have -= have % PIECE  # a piece cut short is written again
            if have == 0:
                return 0
        out = mpremote(self.port, "exec", _PREFIX_HASH % (have, path), timeout=RUN_TIMEOUT_S)
        got = next((ln.split()[1] for ln in out.splitlines() if ln.startswith("P ")), "")
        return have if got == hashlib.sha256(data[:have]).hexdigest() else 0

    def verify(self) -> None:
        """Every staged file, hashed on the door, is what was meant."""
        out = mpremote(self.port, "exec", _HASH % (list(self.files),), timeout=RUN_TIMEOUT_S)
        got = {}
        for ln in out.splitlines():
            parts = ln.split()
            if parts[:1] == ["H"] and len(parts) == 4:
                got[parts[3]] = parts[1]
        bad = [t for t in self.files
               if got.get(t) != hashlib.sha256(self.files[t]).hexdigest()]
        if bad:
            raise UserError(f"the door on {self.port} does not hold {', '.join(bad)} as sent: "
                            "run the command again (it resumes); the door is unchanged",
                            EXIT_FAILED)

    def commit(self) -> None:
        """The switch: the commit record, renamed into place (firmware/staging.py)."""
        plan = {"put": list(self.files), "remove": list(self.remove)}
        out = mpremote(self.port, "exec", _COMMIT % (json.dumps(plan),), timeout=RUN_TIMEOUT_S)
        if "COMMITTED" not in out:
            raise UserError(f"the door on {self.port} did not confirm the commit: run the "
                            "command again", EXIT_FAILED)


def _bound(fn: Callable[[str, int, int], None], target: str, before: int,
           total: int) -> Callable[[], None]:
    return lambda: fn(target, before, total)

