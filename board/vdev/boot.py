"""Entry of the virtual door controller process (MicroPython unix port).

    micropython board/vdev/boot.py STATE_DIR IO_PORT READER_PORT

Mounts the simulated flash, serves the door I/O channel and the reader UART on loopback,
runs the raw REPL on stdin/stdout (STATE_DIR/console.busy exists while a console program
runs, so the bridge turns Ctrl-C into SIGINT), and runs the firmware: from the active
deployed set (active.json), else the previous set (`deploy_fallback` in the status says why;
both, newest first, when active.json cannot be read), else the built-in firmware (safe mode).
What it took is kept in /flash/booted.json for `doorctl deploy`. A firmware that cannot start or stops leaves the
console up with the reason in the status (`safe_mode`), so `doorctl deploy` can always be run
again. Writes STATE_DIR/ready.json once
the firmware is up, so the launcher knows it can be used.
"""

import json
import os
import sys

from board.virtual import VirtualBoard

state_dir, io_port, reader_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
board = VirtualBoard(state_dir, io_port, reader_port)
board.mount()
rom_problem = board.mount_rom()  # the application from /rom when deployed there, checked

# Code the application is made of: deployed to a set under /flash/sets (or /flash/lib, the
# layout before sets), else built in (the repository's).
APP_PACKAGES = ("firmware", "wire", "card_reader", "journal_format", "ticks", "crypto", "offline_cache", "board.vdev.rawrepl")
SETS = ("sets/a", "sets/b")  # host_tools/deploy.py: SETS


def _forget_deployed():
    """Drop the deployed sets, /flash/lib and the ROM image (a `deploy --romfs`) from the
    import path, and every module half-imported from them: the built-in code is what is left."""
    for lib in [board.fs_root + "/" + s + "/lib" for s in SETS] + [board.fs_root + "/lib"]:
        while lib in sys.path:
            sys.path.remove(lib)
    from board import romfs

    romfs.unmount()
    _rom["on"] = False
    _forget_modules()


def _forget_modules():
    for name in list(sys.modules):
        if name.split(".")[0] in APP_PACKAGES or name in APP_PACKAGES:
            del sys.modules[name]


def _read_json(path):
    """(the JSON object in path or None, why not)."""
    try:
        with open(path) as f:
            return json.load(f), None
    except OSError:
        return None, "no " + path.split("/")[-1]
    except ValueError:
        return None, path.split("/")[-1] + " unreadable"


def _files_problem(root, files):
    """Why the lib/ files under root are not as the manifest records them, or None."""
    import binascii
    import hashlib

    buf = bytearray(512)
    view = memoryview(buf)
    for path, want in files.items():
        if not path.startswith("lib/"):
            continue
        h = hashlib.sha256()
        try:
            with open(root + "/" + path, "rb") as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    h.update(view[:n])
        except OSError:
            return path + " missing"
        if binascii.hexlify(h.digest()).decode() != want:
            return path + " differs from deploy.json"
    return None


def _old_layout_problem():
    """Why the files in /flash/lib (the layout before sets) are not the set `doorctl deploy`
    last recorded, or None. That deploy marked itself with deploy.busy while it changed lib/."""
    root = board.fs_root
    try:
        os.stat(root + "/deploy.busy")
        return "a deploy did not finish (deploy.busy)"
    except OSError:
        pass
    manifest, why = _read_json(root + "/deploy.json")
    if manifest is None:
        # files copied by hand (mpremote fs cp): taken as they are
        return None if why.startswith("no ") else why
    return _files_problem(root, manifest.get("files") or {})


_rom = {"on": rom_problem is None, "problem": rom_problem}


def _rom_for(name, manifest):
    """Put the ROM image in the state the set's manifest asks for: the image its rom.json
    records, mounted when it is whole and the one the manifest names; off the path when the
    set names none. None, or why not."""
    from board import romfs

    if _rom["on"]:
        romfs.unmount()
        _rom["on"] = False
    want = manifest.get("rom")
    if not want:
        return None
    why = board.mount_rom(name + "/rom.json")
    _rom["on"], _rom["problem"] = why is None, why
    if why is not None:
        return "its ROM image is not in use (%s)" % why
    rec, why = _read_json(board.fs_root + "/" + name + "/rom.json")
    if rec is None or rec.get("sha256") != want.get("sha256"):
        romfs.unmount()
        _rom["on"] = False
        return "its rom.json does not name the image its deploy.json does"
    return None


def _try_set(name):
    """Import the console and the firmware from the set `name` ("" is the layout before
    sets). Returns (RawRepl, serve_stdin, firmware, manifest) or raises with why not."""
    if name:
        manifest, why = _read_json(board.fs_root + "/" + name + "/deploy.json")
        if manifest is None:
            raise ValueError(why + " (the set was not finished)")
        why = _files_problem(board.fs_root + "/" + name, manifest.get("files") or {}) or \
            _rom_for(name, manifest)
        if why is not None:
            raise ValueError(why)
        sys.path.insert(0, board.fs_root + "/" + name + "/lib")
    else:
        why = _old_layout_problem()
        if why is not None:
            raise ValueError(why)
        manifest = None
    try:
        from board.vdev.rawrepl import RawRepl, serve_stdin
        from firmware import main as fw
    except Exception as e:  # noqa: BLE001  anything the deployed files raise
        if name:
            lib = board.fs_root + "/" + name + "/lib"
            while lib in sys.path:
                sys.path.remove(lib)
        _forget_modules()
        raise ValueError("%s: %s" % (type(e).__name__, e)) from None
    return RawRepl, serve_stdin, fw, manifest


def _newest_first():
    """SETS ordered by their manifest's deploy time, newest first (a before b on a tie or
    when a manifest cannot be read)."""
    t = []
    for name in SETS:
        m, _ = _read_json(board.fs_root + "/" + name + "/deploy.json")
        t.append((m.get("time") if isinstance(m, dict) else None) or "")
    return SETS if t[0] >= t[1] else (SETS[1], SETS[0])


def _candidates():
    """([(role, set)] in the order boot tries them, why not as active.json says or None):
    the active set, then the previous one (active.json, written by `doorctl deploy` as its
    switch); without active.json, /flash/lib (the layout before sets). An active.json that
    cannot be read (torn, empty) does not hide the sets: both are tried, newest first."""
    rec, why = _read_json(board.fs_root + "/active.json")
    if rec is None and why.startswith("no "):
        return [("lib", "")], None
    if isinstance(rec, dict):
        got = [(role, rec.get(role)) for role in ("active", "previous") if rec.get(role) in SETS]
        if got:
            return got, None
    newest, older = _newest_first()
    return [("newest", newest), ("older", older)], "active.json unreadable"


def _record_boot(name, role):
    """Keep booted.json, what this boot took, for `doorctl deploy`, which never stages into
    the set the door runs. Written (temporary file, rename) only when it changes."""
    path = board.fs_root + "/booted.json"
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
        sys.stderr.write("doorctl: cannot write booted.json (%s)\n" % e)


def _load():
    """The console and the firmware from the active deployed set; from the previous set when
    the active one is not whole (a file missing or not as recorded) or does not import; else
    the built-in code, so the console always comes up and deploy can be run again.
    Returns (RawRepl, serve_stdin, firmware or None, why not deployed code, what runs)."""
    candidates, why = _candidates()
    for role, name in candidates:
        try:
            RawRepl, serve_stdin, fw, manifest = _try_set(name)
        except Exception as e:  # noqa: BLE001
            reason = "%s %s: %s" % (role, name or "lib/", e)
            why = reason if why is None else why + "; " + reason
            continue
        runs = {}
        if name or getattr(fw, "__file__", "").startswith((board.fs_root + "/", "/rom/")):
            runs["deployed_set"] = name or "lib"  # else nothing deployed: the built-in code
        if manifest is not None:
            runs["deployed_commit"] = manifest.get("commit")
            runs["deployed_time"] = manifest.get("time")
        if why is not None:
            runs["deploy_fallback"] = role
            runs["deploy_fallback_why"] = why
            sys.stderr.write("doorctl: running the %s set %s: %s\n" % (role, name, why))
        _record_boot(name or "lib", role)
        return RawRepl, serve_stdin, fw, None, runs
    why = "deployed code does not start (%s)" % (why or "no deployed set")
    _forget_deployed()
    _record_boot(None, "built-in")
    sys.stderr.write("doorctl: safe mode: %s; running the built-in firmware: run doorctl "
                     "deploy again\n" % why)
    from board.vdev.rawrepl import RawRepl, serve_stdin  # the built-in copy: /rom is off the path

    try:
        from firmware import main as fw
    except Exception as e:  # noqa: BLE001
        why += "; built-in firmware does not start either (%s: %s)" % (type(e).__name__, e)
        fw = None
    return RawRepl, serve_stdin, fw, why, {"deploy_fallback": "built-in"}


RawRepl, serve_stdin, firmware, safe_mode, runs = _load()
if firmware is not None:
    status = firmware.status
else:
    status = {"ready": False}
status.update(runs)
if safe_mode is not None:
    status["safe_mode"] = safe_mode

busy = state_dir + "/console.busy"
try:
    os.remove(busy)  # left by a power cut during a program
except OSError:
    pass
repl = RawRepl(busy_path=busy)
board.io.status_provider = lambda: status
# Where the application's code came from: "rom" (deployed --romfs, heap holds rom_bytes of
# image standing in for memory-mapped flash) or "files" (.mpy files, bytecode in the heap).
status["code"] = "rom" if _rom["on"] else "files"
status["rom_bytes"] = board.rom_bytes if _rom["on"] else 0
rom_problem = _rom["problem"]
if rom_problem is not None and not rom_problem.startswith("no rom.json"):  # none: not --romfs
    sys.stderr.write("doorctl: not running from /rom: %s\n" % rom_problem)
    status["rom_problem"] = rom_problem


_served = []


async def _services(board):
    if not _served:  # once: the console-only fallback after a firmware that stopped
        _served.append(True)
        await board.serve()
    with open(state_dir + "/ready.json", "w") as f:
        f.write(json.dumps({"boot": board.boot_count, "io_port": io_port,
                            "reader_port": reader_port, "safe_mode": safe_mode}))


async def _console(board):
    await serve_stdin(repl)


def _console_only(why):
    """Nothing runs the door: the console (and the I/O channel's status) stay up, saying why."""
    import asyncio

    status["ready"] = False
    status["safe_mode"] = why
    sys.stderr.write("doorctl: safe mode, console only: %s\n" % why)

    async def _main():
        await asyncio.gather(_services(board), _console(board))

    asyncio.run(_main())


try:
    if firmware is None:
        _console_only(safe_mode)
    else:
        firmware.run(board, extra_tasks=(_services, _console))
except KeyboardInterrupt:
    # A Ctrl-C that raced past the end of a console program: the door keeps running.
    import asyncio

    while True:
        try:
            asyncio.get_event_loop().run_forever()
        except KeyboardInterrupt:
            pass
except Exception as e:  # noqa: BLE001  the firmware stopped
    sys.print_exception(e, sys.stderr)  # where it stopped, for whoever reads stderr.log
    if type(e).__name__ == "PowerCut":
        # The simulated power went in the middle of a flash write: nothing runs until the
        # host gives it back (a restart), the console says why.
        _console_only("the firmware stopped (%s: %s)" % (type(e).__name__, e))
    # As the ESP32 reference board does (board/esp32_ref.py run): a door controller must come
    # back by itself. A task that raised (a heap too fragmented for a card session, a door
    # machine that found no heap even to restart) ended the firmware; the console-only safe
    # mode kept this door from deciding a card again until someone restarted it. A reboot
    # gives a whole heap back and loses nothing (the journal is power-safe): the launcher
    # starts the process again, as after machine.reset().
    sys.stderr.write("doorctl: the firmware stopped (%s): restarting\n" % type(e).__name__)
    import time

    from board.vdev.rawrepl import REBOOT_EXIT

    time.sleep(1)
    sys.exit(REBOOT_EXIT)
