"""The torture run: a seeded random schedule of faults (power cuts, broker stops and kills, TCP
drops, platform kills, long outages that overflow a journal, a hostile publisher on every door
topic) over real doors, mosquitto and the platform, and one invariant checker at the end
(docs/torture.md). `plan` makes the schedule, `hostile` the attacker's messages, `check` the
verdict, `rig` runs it all."""

import sys as _sys

from host_tools.paths import REPO_ROOT as _REPO_ROOT


def _repo_board_first() -> None:
    """adafruit-blinka (a dependency) installs a top-level `board.py`, which shadows this
    repository's `board` package when the tools run from the installed `doorctl` script; the
    run reads flash images with board.vdev.flashsim, so the repository's packages come first."""
    mod = _sys.modules.get("board")
    if mod is not None and not hasattr(mod, "__path__"):
        del _sys.modules["board"]
    if str(_REPO_ROOT) not in _sys.path:
        _sys.path.insert(0, str(_REPO_ROOT))


_repo_board_first()
