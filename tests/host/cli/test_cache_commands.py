"""`doorctl cache build/delta/inspect`, and host-built files read by the device code under
MicroPython (64K heap) with the same decisions as CPython."""

from __future__ import annotations

import subprocess
from pathlib import Path

from typer.testing import CliRunner

from host_tools.cli import app
from host_tools.mpy_build import build_device_tree
from host_tools.paths import micropython, micropython_env
from offline_cache.cache import Cache

runner = CliRunner()
KEY_HEX = "c0" * 32
CARDS = """ref,status,valid_from,valid_to,doors,schedule,class
0011223344556677,active,2026-01-01,2026-12-31,0 1 2,1,normal
1111111111111111,lost,2026-01-01,,*,0,normal
2222222222222222,active,2026-01-01,,*,0,master
3333333333333333,suspended,2026-01-01,,*,0,normal
4444444444444444,active,2027-01-01,,*,0,normal
"""
SCHED = ('{"schedules": {"1": [{"days": "mon tue wed thu fri", "from": "07:00", "to": "22:00"}]}, '
         '"holidays": ["2026-10-01"]}')
# 2026-06-03 (a Wednesday) 04:00 UTC = 12:00 at +8h; 2026-06-06 is a Saturday.
TIMES = [1780459200, 1780459200 + 3 * 86400, 1780459200 + 12 * 3600]
REFS = ["0011223344556677", "1111111111111111", "2222222222222222", "3333333333333333",
        "4444444444444444", "5555555555555555"]


def _files(tmp: Path) -> tuple[Path, Path]:
    (tmp / "key.hex").write_text(KEY_HEX)
    (tmp / "cards.csv").write_text(CARDS)
    (tmp / "s.json").write_text(SCHED)
    return tmp / "key.hex", tmp / "cards.csv"


def _cli(*args: str | Path) -> tuple[int, str]:
    r = runner.invoke(app, ["cache", *map(str, args)])
    return r.exit_code, r.output


def _host_decisions(folder: Path) -> list[str]:
    c = Cache(str(folder), bytes.fromhex(KEY_HEX), 9)
    out = [f"{r} {d} {t} {c.decide(bytes.fromhex(r), d, t, m)}"
           for r in REFS for d in (0, 5) for t in TIMES for m in ("normal", "lockdown")]
    c.close()
    return out


DEVICE = """
import sys
from offline_cache.cache import Cache
c = Cache(sys.argv[1], bytes.fromhex(sys.argv[2]), 9)
assert c.error is None, c.error
for r in sys.argv[3].split(","):
    for d in (0, 5):
        for t in (%s):
            for m in ("normal", "lockdown"):
                print("%%s %%d %%d %%s" %% (r, d, t, c.decide(bytes.fromhex(r), d, t, m)))
""" % ", ".join(map(str, TIMES))


def _device_decisions(folder: Path, tmp: Path) -> list[str]:
    script = tmp / "decide.py"
    script.write_text(DEVICE)
    env = micropython_env(build_device_tree()[0].parents[1])
    proc = subprocess.run([micropython(), "-X", "heapsize=64K", str(script), str(folder), KEY_HEX,
                           ",".join(REFS)], env=env, cwd=tmp, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def test_build_inspect_delta_and_the_device_reads_them(tmp_path: Path) -> None:
    key, cards = _files(tmp_path)
    code, out = _cli("build", cards, "-k", key, "-o", tmp_path / "v1.bin", "--version", 1, "--site", 9,
                     "--schedules", tmp_path / "s.json")
    assert code == 0 and "5 cards" in out
    code, out = _cli("inspect", tmp_path / "v1.bin", "-k", key, "--ref", "2222222222222222", "--index", 0)
    assert code == 0 and "tag: valid" in out and "master" in out and "0011223344556677  active" in out
    # The device code, under MicroPython, decides exactly as CPython does on the host-built file.
    dev = tmp_path / "door"
    dev.mkdir()
    (tmp_path / "in.bin").write_bytes((tmp_path / "v1.bin").read_bytes())
    Cache(str(dev), bytes.fromhex(KEY_HEX), 9).apply(str(tmp_path / "in.bin"))  # consumes in.bin
    host = _host_decisions(dev)
    assert "(True, 'granted', False)" in host[0] and "lost" in host[len(TIMES) * 4]
    assert _device_decisions(dev, tmp_path) == host
    # A delta built from two snapshots moves the door to the new version; the device agrees.
    (tmp_path / "cards2.csv").write_text(CARDS.replace("active,2026-01-01,2026-12-31", "lost,2026-01-01,"))
    code, _ = _cli("build", tmp_path / "cards2.csv", "-k", key, "-o", tmp_path / "v2.bin", "--version", 2,
                   "--site", 9, "--schedules", tmp_path / "s.json")
    assert code == 0
    code, out = _cli("delta", tmp_path / "v1.bin", tmp_path / "v2.bin", "-k", key, "-o", tmp_path / "d.bin")
    assert code == 0 and "1 changes" in out
    c = Cache(str(dev), bytes.fromhex(KEY_HEX), 9)
    assert c.apply(str(tmp_path / "d.bin")) == 2 and c.overlay is not None
    c.close()
    host = _host_decisions(dev)
    assert "lost" in host[0]
    assert _device_decisions(dev, tmp_path) == host


def test_errors_are_one_line(tmp_path: Path) -> None:
    key, cards = _files(tmp_path)
    (tmp_path / "bad.csv").write_text("ref,status\n00,active\n")
    code, out = _cli("build", tmp_path / "bad.csv", "-k", key, "-o", tmp_path / "x.bin", "--version", 1,
                     "--site", 1)
    assert code == 2 and "line 2: ref must be 16 hex digits" in out
    (tmp_path / "bad.csv").write_text("ref,status\n0011223344556677,stolen\n")
    code, out = _cli("build", tmp_path / "bad.csv", "-k", key, "-o", tmp_path / "x.bin", "--version", 1,
                     "--site", 1)
    assert code == 2 and "status must be one of" in out
    code, out = _cli("build", cards, "-k", key, "-o", tmp_path / "v1.bin", "--version", 1, "--site", 1)
    assert code == 0
    (tmp_path / "other.hex").write_text("ab" * 32)
    code, out = _cli("inspect", tmp_path / "v1.bin", "-k", tmp_path / "other.hex")
    assert code == 1 and "tag does not match" in out
    (tmp_path / "junk.bin").write_bytes(b"hello")
    code, out = _cli("inspect", tmp_path / "junk.bin")
    assert code == 1 and "malformed" in out and len(out.strip().splitlines()) == 1
