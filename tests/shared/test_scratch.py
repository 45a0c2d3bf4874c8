# The scratch helpers (tests/scratch.py) give a test files no other run on the machine can
# touch: under CPython as under MicroPython, not names fixed in /tmp, where two runs (two
# worktrees, two CI jobs) would overwrite each other's flash images mid-test.
import os

from tests.scratch import scratch_dir, scratch_path


def test_a_tests_scratch_folder_is_its_own():
    if not hasattr(os, "getpid"):
        return  # the bare-metal board: a fresh filesystem for each test, /tmp is its own
    assert scratch_dir() != "/tmp"
    assert scratch_path("fs.img").startswith(scratch_dir() + "/")
