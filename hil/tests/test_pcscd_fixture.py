"""The rig's `pcscd` fixture stops the pcscd it started however the run ends, also when a card
reader the rig file names never shows (the run fails; no pcscd is left behind)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.cards import pcsc_private
from host_tools.paths import REPO_ROOT

# A bench whose cards sit on a reader that is not there (the ports are never opened: only the
# pcscd fixture runs).
RIG = """kind = "bench"
[dut]
port = "/dev/null"
[io]
port = "/dev/null"
[reader]
port = "/dev/null"
[site]
keys = "site-keys.json"
[cards]
resident = "No Such Reader"
master = "No Such Reader"
lost = "No Such Reader"
clone = "No Such Reader"
stranger = "No Such Reader"
[changer]
addr = "127.0.0.1:7300"
"""


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_a_reader_that_never_shows_leaves_no_pcscd_behind(tmp_path: Path) -> None:
    if not pcsc_private.can_isolate():
        # The system pcscd would be used, and it is not the run's to stop.
        pytest.skip("no private pcscd here (no mount namespace)")
    rig = tmp_path / "rig.toml"
    rig.write_text(RIG)
    env = {k: v for k, v in os.environ.items()
           if k not in (pcsc_private.DIR_ENV, pcsc_private.PORT_ENV, pcsc_private.SOCKET_ENV)}
    env["TMPDIR"] = str(tmp_path)  # the child's private pcscd folder, found by name below
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rig", str(rig),
         "hil/tests/test_bench_rig.py::test_readers_are_chosen_by_name_from_what_pcscd_sees"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "does not show the card reader 'No Such Reader'" in run.stdout, \
        run.stdout[-2000:]
    left = processes_mentioning(f"{tmp_path}/pcscd-")
    for pid in left:  # not left running after this test either
        os.kill(pid, signal.SIGTERM)
    assert left == []
