"""Door-side cost of the DESFire EV2 card step, measured on the MicroPython unix port (64K heap)
against an in-process simulated card, beside the same code on CPython (whose AES is OpenSSL)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from host_tools.mpy_build import build_device_tree, compile_file
from host_tools.paths import REPO_ROOT, micropython, micropython_env

SCRIPT = Path(__file__).with_name("device") / "card_auth.py"
N_MPY = 200
N_CPY = 500

FIGURES = {
    "card.auth_ms": f"AuthenticateEV2First, door-side compute, mean of {N_MPY} (MicroPython, 64K heap), ms",
    "card.session_ms": "whole card step (select, authenticate, GetCardUID, MAC'd ReadData, reference), "
                       "door-side compute (MicroPython, 64K heap), ms",
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


def run(names: set[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # the card simulator is host code: compile it too, so the 64K heap holds the door, not the compiler
        sim = Path(tmp) / "host_tools"
        compile_file(REPO_ROOT / "host_tools" / "__init__.py", sim / "__init__.mpy")
        compile_file(REPO_ROOT / "host_tools" / "cards" / "__init__.py", sim / "cards" / "__init__.mpy")
        compile_file(REPO_ROOT / "host_tools" / "cards" / "desfire.py", sim / "cards" / "desfire.mpy")
        env = micropython_env(build_device_tree()[0].parents[1], tmp)
        proc = subprocess.run([micropython(), "-X", "heapsize=64K", str(SCRIPT), str(N_MPY)],
                              env=env, cwd=tmp, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"card benchmark failed under MicroPython: {proc.stdout}{proc.stderr}")
        auth, session, blocks_auth, blocks_session = _parse(proc.stdout)
        out.update({"card.auth_ms": auth, "card.session_ms": session, "card.aes_blocks_per_auth": blocks_auth,
                    "card.aes_blocks_per_session": blocks_session})
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        proc = subprocess.run([sys.executable, str(SCRIPT), str(N_CPY)], env=env, cwd=tmp,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"card benchmark failed under CPython: {proc.stdout}{proc.stderr}")
        auth, session, _, _ = _parse(proc.stdout)
        out.update({"card.baseline_auth_ms": auth, "card.baseline_session_ms": session})
    return out
