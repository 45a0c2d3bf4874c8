# The application frozen into a firmware image, as its board declares it: each board's image
# manifest includes this file with board="<board module>", and this freezes that board's
# PACKAGES, the board package's base (__init__, interface), the board module, its
# DEVICE_FILES and its ENTRY, plus `extra` (repo-relative files the image also carries).
# The declaration is read by host_tools/boards.py (standard library only, never importing the
# board module), the same reader `doorctl deploy` uses. Paths are relative to this file
# (MicroPython's manifest tools run it from its folder).
import os
import sys

include("$(MPY_DIR)/extmod/asyncio")

options.defaults(board=None, extra=())
_repo = os.path.abspath("..")
if _repo not in sys.path:
    sys.path.insert(0, _repo)
from pathlib import Path  # noqa: E402

from host_tools.boards import read_board  # noqa: E402

_board = read_board(options.board, Path(_repo))
if _board is None:
    raise ValueError("board/%s.py declares no PLATFORM, PACKAGES, DEVICE_FILES, ENTRY" % options.board)
# Plain syntax only: mpy-cross reads every file under board/ (no set unpacking here).
_frozen = set(_board.files(Path(_repo))) | set(options.extra)
if _board.entry:
    _frozen.add(_board.entry)
for _rel in sorted(_frozen):
    module(_rel, base_path="..")
