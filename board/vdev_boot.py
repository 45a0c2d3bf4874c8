"""Entry of the virtual door controller process (MicroPython unix port).

    micropython board/vdev_boot.py STATE_DIR IO_PORT READER_PORT

Mounts the simulated flash, serves the door I/O channel and the reader UART on loopback,
runs the raw REPL on stdin/stdout (STATE_DIR/console.busy exists while a console program
runs, so the bridge turns Ctrl-C into SIGINT), and runs the firmware. Writes STATE_DIR/ready.json once
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

from board.rawrepl import RawRepl, serve_stdin  # noqa: E402
from firmware import main as firmware  # noqa: E402  (may come from /flash/lib once deployed)

busy = state_dir + "/console.busy"
try:
    os.remove(busy)  # left by a power cut during a program
except OSError:
    pass
repl = RawRepl(busy_path=busy)
board.io.status_provider = lambda: firmware.status
# Where the application's code came from: "rom" (deployed --romfs, heap holds rom_bytes of
# image standing in for memory-mapped flash) or "files" (.mpy files, bytecode in the heap).
firmware.status["code"] = "rom" if rom_problem is None else "files"
firmware.status["rom_bytes"] = board.rom_bytes
if rom_problem is not None and not rom_problem.startswith("no rom.json"):  # none: not --romfs
    sys.stderr.write("doorctl: not running from /rom: %s\n" % rom_problem)
    firmware.status["rom_problem"] = rom_problem


async def _services(board):
    await board.serve()
    with open(state_dir + "/ready.json", "w") as f:
        f.write(json.dumps({"boot": board.boot_count, "io_port": io_port,
                            "reader_port": reader_port}))


async def _console(board):
    await serve_stdin(repl)


try:
    firmware.run(board, extra_tasks=(_services, _console))
except KeyboardInterrupt:
    # A Ctrl-C that raced past the end of a console program: the door keeps running.
    import asyncio

    while True:
        try:
            asyncio.get_event_loop().run_forever()
        except KeyboardInterrupt:
            pass
