# A fresh scratch file path for a test, under both interpreters: in the private directory the
# MicroPython runner gives each device test (MPY_TEST_TMP), else in /tmp.
import os


def scratch_path(name):
    base = os.getenv("MPY_TEST_TMP") or "/tmp"
    p = base + "/" + name
    try:
        os.remove(p)
    except OSError:
        pass
    return p
