"""main.py of the ESP32 reference board, written by `doorctl deploy`.

MicroPython's boot code has already mounted littlefs (the "vfs" partition) at / and put
/lib on sys.path; a build with a ROM partition has mounted its ROMFS image at /rom too.
`doorctl deploy` keeps two sets of files, /sets/a and /sets/b, and names the one to run and
the previous one in /active.json (replaced atomically, the deploy's last step). This takes the
active set when its manifest is there and its code imports, else the previous set (both,
newest first, when active.json cannot be read), else /lib (the layout before sets, or files
copied by hand). What it took goes to /booted.json, so `doorctl deploy` never stages there.
The ROM image is trusted only for a set whose manifest names it, and only when it matches the
set's record (its rom.json) that `doorctl deploy --romfs` wrote after proving it
(board/romfs.py). Hold the REX button while the board powers up to stay at the REPL instead
(safe mode, for recovery)."""
import os
import sys

_ROOT = os.getcwd().rstrip("/")  # "" on the board, where boot runs in /
_SETS = ("sets/a", "sets/b")
_APP = ("board", "firmware", "wire", "card_reader", "journal_format", "ticks", "crypto", "offline_cache")


def _json(path):
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _forget(path):
    while path in sys.path:
        sys.path.remove(path)
    for name in list(sys.modules):
        if name.split(".")[0] in _APP:
            del sys.modules[name]


def _rom(wanted, record):
    """Mount the image `record` names when the set wants one, take it off the path when not."""
    try:
        from board import romfs
    except ImportError:
        return None
    if not wanted:
        romfs.unmount()
        return None

    def _partition(n):
        try:
            import vfs

            image = vfs.rom_ioctl(2, n)  # memory-mapped flash, or a negative errno
        except (AttributeError, OSError):
            return None
        return None if isinstance(image, int) else image

    image, why = romfs.adopt(_partition, record)
    if why is not None and not why.startswith("no rom.json"):
        print("doorctl: not running from /rom:", why)
    return why


def _order():
    """([(role, set)] to try, why not as active.json says or None). Without active.json: none
    (the layout before sets). One that cannot be read (torn, empty) does not hide the sets:
    both are tried, the newest deploy first."""
    try:
        os.stat(_ROOT + "/active.json")
    except OSError:
        return [], None
    rec = _json(_ROOT + "/active.json")
    if isinstance(rec, dict):
        got = [(r, rec.get(r)) for r in ("active", "previous") if rec.get(r) in _SETS]
        if got:
            return got, None
    t = []
    for name in _SETS:
        m = _json(_ROOT + "/" + name + "/deploy.json")
        t.append((m.get("time") if isinstance(m, dict) else None) or "")
    names = _SETS if t[0] >= t[1] else (_SETS[1], _SETS[0])
    return [("newest", names[0]), ("older", names[1])], "active.json unreadable"


def _record_boot(name, role):
    """Keep /booted.json, what this boot took, for `doorctl deploy`, which never stages into
    the set the board runs. Written (temporary file, rename) only when it changes."""
    import json

    path = _ROOT + "/booted.json"
    text = json.dumps({"set": name, "role": role})
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    try:
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.rename(path + ".tmp", path)
    except OSError as e:
        print("doorctl: cannot write booted.json (", repr(e), ")")


def _start():
    """Import the board's main from the first set that has it: (main, set, why not others)."""
    order, first = _order()
    why = [first] if first else []
    for role, name in order:
        manifest = _json(_ROOT + "/" + name + "/deploy.json")
        if not isinstance(manifest, dict):
            why.append(role + " " + name + ": no deploy.json")
            continue
        lib = _ROOT + "/" + name + "/lib"
        sys.path.insert(0, lib)
        problem = _rom(manifest.get("rom"), _ROOT + "/" + name + "/rom.json")
        if manifest.get("rom") and problem is not None:
            why.append(role + " " + name + ": " + problem)
            _forget(lib)
            continue
        try:
            from board.esp32_ref import main

            _record_boot(name, role)
            return main, name, why
        except Exception as e:  # noqa: BLE001  a torn module raises ValueError, SyntaxError, ...
            why.append(role + " " + name + ": " + repr(e))
            _forget(lib)
    _record_boot("lib", "lib")
    _rom(True, "rom.json")  # the layout before sets: /lib, and its recorded image if any
    from board.esp32_ref import main

    return main, "/lib", why


# Safe mode: firmware that does not import (a deploy cut half-way) or stops leaves the REPL
# up with one status line, so `doorctl deploy` can always be run again.
try:
    main, _set, _why = _start()
except ImportError as e:
    print("doorctl: safe mode: firmware not deployed or incomplete (", e, "): run doorctl deploy")
except Exception as e:  # noqa: BLE001  a torn module raises ValueError, SyntaxError, ...
    print("doorctl: safe mode: deployed firmware does not import (", repr(e), "): run doorctl deploy")
else:
    if _why:
        print("doorctl: running", _set, "because", "; ".join(_why))
    try:
        main()
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001
        print("doorctl: safe mode: the firmware stopped (", repr(e), "): REPL for recovery")
