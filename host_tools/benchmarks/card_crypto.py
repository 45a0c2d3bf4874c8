"""Door-side cost of the DESFire EV2 card step, measured on the MicroPython unix port against an
in-process simulated card, beside the same code on CPython (whose AES is OpenSSL).

The MicroPython process gets the door's 64 KiB plus 16 KiB for the simulated card, whose code
alone takes 12 KiB of heap; `card.door_modules_heap_bytes` is what the door's modules take."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from host_tools.benchmarks import Outcome, failing
from host_tools.mpy_build import build_device_tree, compile_file
from host_tools.paths import REPO_ROOT, micropython, micropython_env

SCRIPT = Path(__file__).with_name("device") / "card_auth.py"
N_MPY = 200
N_CPY = 500
SMOKE = {"N_MPY": 5, "N_CPY": 5}

FIGURES = {
    "card.auth_ms": f"AuthenticateEV2First, door-side compute, mean of {N_MPY} (MicroPython), ms",
    "card.session_ms": "whole card step (select, authenticate, GetCardUID, MAC'd ReadData, reference), "
                       "door-side compute (MicroPython), ms",
    "card.door_modules_heap_bytes": "MicroPython heap taken by the door's card modules once imported "
                                    "(crypto, key store, card session), bytes",
    "card.aes_blocks_per_auth": "AES block operations by the door per AuthenticateEV2First",
    "card.aes_blocks_per_session": "AES block operations by the door per card step "
                                   "(incl. key diversification)",
    "card.baseline_auth_ms": f"baseline: AuthenticateEV2First door-side on CPython, mean of {N_CPY}, ms",
    "card.baseline_session_ms": "baseline: whole card step door-side on CPython, ms",
}


def _parse(out: str) -> list[float]:
    for line in out.splitlines():
        if line.startswith("result "):
            return [float(x) for x in line.split()[1:]]
    raise RuntimeError(f"card benchmark printed no result: {out!r}")


MPY = ["card.auth_ms", "card.session_ms", "card.aes_blocks_per_auth",
       "card.aes_blocks_per_session", "card.door_modules_heap_bytes"]
BASELINE = ["card.baseline_auth_ms", "card.baseline_session_ms"]
QUICK_FIGURES = list(FIGURES)


def run(names: set[str]) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with failing(out, *MPY):
            _micropython(tmp, out)
        with failing(out, *BASELINE):
            _baseline(tmp, out)
    return out


def _micropython(tmp: str, out: dict[str, Outcome]) -> None:
    # the card simulator is host code: compile it too, so the 64K heap holds the door, not the compiler
    sim = Path(tmp) / "host_tools"
    compile_file(REPO_ROOT / "host_tools" / "__init__.py", sim / "__init__.mpy")
    compile_file(REPO_ROOT / "host_tools" / "cards" / "__init__.py", sim / "cards" / "__init__.mpy")
    compile_file(REPO_ROOT / "host_tools" / "cards" / "desfire.py", sim / "cards" / "desfire.mpy")
    env = micropython_env(build_device_tree()[0].parents[1], tmp)
    proc = subprocess.run([micropython(), "-X", "heapsize=80K", str(SCRIPT), str(N_MPY)],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"card benchmark failed under MicroPython: {proc.stdout}{proc.stderr}")
    auth, session, blocks_auth, blocks_session, door_heap = _parse(proc.stdout)
    out.update({"card.auth_ms": auth, "card.session_ms": session, "card.aes_blocks_per_auth": blocks_auth,
                "card.aes_blocks_per_session": blocks_session, "card.door_modules_heap_bytes": door_heap})


def _baseline(tmp: str, out: dict[str, Outcome]) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, str(SCRIPT), str(N_CPY)], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"card benchmark failed under CPython: {proc.stdout}{proc.stderr}")
    auth, session, _, _, _ = _parse(proc.stdout)
    out.update({"card.baseline_auth_ms": auth, "card.baseline_session_ms": session})
