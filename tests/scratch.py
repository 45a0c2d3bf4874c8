# A fresh scratch file path for a test, under both interpreters: in the private directory the
# MicroPython runner gives each device test (MPY_TEST_TMP), else in /tmp (also on the
# bare-metal board, which has no environment: each test runs on a fresh filesystem there).
import os


def _env(name):
    getenv = getattr(os, "getenv", None)
    return getenv(name) if getenv else None


def scratch_dir():
    return _env("MPY_TEST_TMP") or "/tmp"


def scratch_path(name):
    base = scratch_dir()
    p = base + "/" + name
    try:
        os.remove(p)
    except OSError:
        pass
    return p


def private_dir(prefix):
    """MPY_TEST_TMP, else a folder of this process under /tmp (on the bare-metal board, which
    has neither environment nor processes, /tmp itself: its filesystem is new for each test)."""
    base = _env("MPY_TEST_TMP")
    if base:
        return base
    getpid = getattr(os, "getpid", None)
    return "/tmp/%s-%d" % (prefix, getpid()) if getpid else "/tmp"


_made = [0]


def fresh_dir(prefix):
    """A new, empty folder under private_dir(prefix) for one test's cache or flash files."""
    base = private_dir(prefix)
    _made[0] += 1
    d = base + "/d%d" % _made[0]
    for p in (base, d):
        try:
            os.mkdir(p)
        except OSError:
            pass
    return d
