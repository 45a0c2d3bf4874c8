# Checks that the device-test runner really runs MicroPython with a constrained heap.
import os
import sys


def test_is_micropython():
    assert sys.implementation.name == "micropython"


def test_heap_is_constrained():
    import gc
    gc.collect()
    total = gc.mem_free() + gc.mem_alloc()
    assert total <= 64 * 1024, total
    try:
        bytearray(200 * 1024)
    except MemoryError:
        return
    raise AssertionError("a 200 KiB allocation succeeded under a 64 KiB heap")


def test_has_private_tmp():
    tmp = os.getenv("MPY_TEST_TMP")
    assert tmp
    with open(tmp + "/x", "w") as f:
        f.write("ok")
    assert open(tmp + "/x").read() == "ok"
