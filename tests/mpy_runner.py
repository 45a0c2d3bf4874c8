# Runs one device test under the MicroPython unix port (driven by tests/mpy_plugin.py).
#   micropython mpy_runner.py FILE --list   prints the test function names
#   micropython mpy_runner.py FILE NAME     runs that test; exit status 0 = pass
import sys


def _load(path):
    cut = path.rfind("/")
    folder, fname = (path[:cut], path[cut + 1 :]) if cut >= 0 else (".", path)
    sys.path.insert(0, folder)
    return __import__(fname[:-3])


def main():
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
