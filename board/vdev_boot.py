"""Entry of the virtual door controller process (MicroPython unix port).

    micropython board/vdev_boot.py STATE_DIR IO_PORT READER_PORT

Mounts the simulated flash, serves the door I/O channel and the reader UART on loopback,
runs the raw REPL on stdin/stdout (STATE_DIR/console.busy exists while a console program
runs, so the bridge turns Ctrl-C into SIGINT), and runs the firmware. Safe mode: deployed
code that does not import (a deploy cut half-way) is set aside for the built-in firmware, and
a firmware that cannot start or stops leaves the console up with the reason in the status
(`safe_mode`), so `doorctl deploy` can always be run again. Writes STATE_DIR/ready.json once
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

# Code the application is made of: deployed to /flash/lib, else built in (the repository's).
APP_PACKAGES = ("firmware", "crypto", "offline_cache", "board.rawrepl")


def _forget_deployed():
    """Drop /flash/lib and the ROM image (a `deploy --romfs`) from the import path, and every
    module half-imported from them: the built-in code is what is left."""
    lib = board.fs_root + "/lib"
    while lib in sys.path:
        sys.path.remove(lib)
    from board import romfs

    romfs.unmount()
    for name in list(sys.modules):
        if name.split(".")[0] in APP_PACKAGES or name in APP_PACKAGES:
            del sys.modules[name]


def _deployed_set_problem():
    """Why the files in /flash/lib are not the set `doorctl deploy` last recorded, or None.
    A deploy marks itself with deploy.busy before it changes anything and clears the mark once
    every file is verified and deploy.json written."""
    import binascii
    import hashlib

    root = board.fs_root
    try:
        os.stat(root + "/deploy.busy")
        return "a deploy did not finish (deploy.busy)"
    except OSError:
        pass
    try:
        with open(root + "/deploy.json") as f:
            files = json.load(f).get("files") or {}
    except OSError:
        return None  # files copied by hand (mpremote fs cp): taken as they are
    except ValueError:
        return "deploy.json unreadable"
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


def _load():
    """The console and the firmware, from /flash/lib; a deploy cut half-way (a torn or missing
    module) falls back to the built-in code, so the console always comes up and deploy can be
    run again. Returns (RawRepl, serve_stdin, firmware or None, why not the deployed code)."""
    why = _deployed_set_problem()
    if why is None:
        try:
            from board.rawrepl import RawRepl, serve_stdin
            from firmware import main as fw

            return RawRepl, serve_stdin, fw, None
        except Exception as e:  # noqa: BLE001  anything the deployed files raise
            why = "%s: %s" % (type(e).__name__, e)
    why = "deployed code in lib/ does not start (%s)" % why
    _forget_deployed()
    sys.stderr.write("doorctl: safe mode: %s; running the built-in firmware: run doorctl "
                     "deploy again\n" % why)
    from board.rawrepl import RawRepl, serve_stdin  # the built-in copy: /rom is off the path

    try:
        from firmware import main as fw
    except Exception as e:  # noqa: BLE001
        why += "; built-in firmware does not start either (%s: %s)" % (type(e).__name__, e)
        fw = None
    return RawRepl, serve_stdin, fw, why


RawRepl, serve_stdin, firmware, safe_mode = _load()
if firmware is not None:
    status = firmware.status
else:
    status = {"ready": False}
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
status["code"] = "rom" if rom_problem is None else "files"
status["rom_bytes"] = board.rom_bytes
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
except Exception as e:  # noqa: BLE001  the firmware stopped: keep the console for recovery
    _console_only("the firmware stopped (%s: %s)" % (type(e).__name__, e))
