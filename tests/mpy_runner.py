# Runs one device test under the MicroPython unix port (driven by tests/mpy_plugin.py).
#   micropython mpy_runner.py FILE --list   prints the test function names
#   micropython mpy_runner.py FILE NAME     runs that test; exit status 0 = pass
import sys


def _load(path):
    cut = path.rfind("/")
    folder, fname = (path[:cut], path[cut + 1 :]) if cut >= 0 else (".", path)
    sys.path.insert(0, folder)
    return __import__(fname[:-3])


def _host_side():
    """On a firmware image the shared packages are frozen without their host-side modules
    (host_tools/boards.py HOST_SIDE), and a frozen package finds its modules in the image only:
    the harness puts the ones this test imports beside it under flat names, listed in
    mpy_host_side.py, and they are loaded from there under their own names."""
    try:
        import mpy_host_side
    except ImportError:
        return  # not on an image, or none imported
    for name in mpy_host_side.MODULES:
        cut = name.rfind(".")
        mod = __import__(name.replace(".", "__"))
        sys.modules[name] = mod
        __import__(name[:cut])
        setattr(sys.modules[name[:cut]], name[cut + 1 :], mod)


def main():
    path = sys.argv[1]
    cut = path.rfind("/")
    sys.path.insert(0, path[:cut] if cut >= 0 else ".")  # where the harness puts them on mcu
    _host_side()
    mod = _load(sys.argv[1])
    name = sys.argv[2]
    if name == "--list":
        for key in sorted(dir(mod)):
            if key.startswith("test_") and callable(getattr(mod, key)):
                print(key)
        return
    getattr(mod, name)()
    print("MPY-TEST-OK")


main()
