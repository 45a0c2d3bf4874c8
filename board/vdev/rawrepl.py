"""A MicroPython raw REPL served from the firmware's event loop, for the virtual device.

The unix port has no raw REPL of its own. This one speaks the protocol `mpremote` uses on a
USB-attached board, over the process's stdin/stdout (which the host bridges to a pty):

- Ctrl-A enters raw mode ("raw REPL; CTRL-B to exit\\r\\n>"); Ctrl-B leaves it;
- in raw mode, text up to Ctrl-D is a program: answered "OK", then its output, "\\x04", its
  error output, "\\x04", and the ">" prompt again;
- Ctrl-D on an empty raw buffer is a soft reset: "soft reboot\\r\\n" and a fresh namespace
  (the door keeps running: a virtual device has no reason to stop guarding it);
- raw-paste mode ("\\x05A\\x01") is refused with "R\\x00", and mpremote falls back;
- Ctrl-C clears a half-received program; Ctrl-B and Ctrl-C are honoured mid-program too;
- Ctrl-D in friendly mode and `machine.reset()` end the process with REBOOT_EXIT, and the host
  launcher starts it again on the same pty and flash, like a board rebooting;
- Ctrl-C while a program runs interrupts it (KeyboardInterrupt, reported like any error): the
  program keeps the REPL from reading its input, so the host bridge, which sees the Ctrl-C
  on the pty, sends the process SIGINT while the busy file (`busy_path`) exists.

Programs run synchronously inside the event loop (the firmware pauses while one runs),
and print straight to stdout: the unix port cannot redirect sys.stdout.
"""

import os
import sys
import time

from firmware.log import set_console

REBOOT_EXIT = 75  # process exit status that asks the launcher for a restart
MAX_PROGRAM = 64 * 1024

_RAW_BANNER = "raw REPL; CTRL-B to exit\r\n>"


def _out(s):
    sys.stdout.write(s)


class RawRepl:
    def __init__(self, banner="MicroPython (virtual door controller)", busy_path=None):
        self.banner = banner
        self.busy_path = busy_path
        self.raw = False
        self.buf = bytearray()
        self.line = bytearray()
        self.paste_probe = 0  # bytes of "\x05A\x01" matched at the start of a program
        self.namespace = {"__name__": "__main__"}

    # -- bytes in ------------------------------------------------------------------

    def feed(self, data):
        for b in data:
            if self.raw:
                self._raw_byte(b)
            else:
                self._friendly_byte(b)

    def _enter_raw(self):
        self.raw = True
        self.buf = bytearray()
        self.paste_probe = 0
        set_console(False)
        _out(_RAW_BANNER)

    def _leave_raw(self):
        self.raw = False
        self.buf = bytearray()
        _out("\r\n" + self.banner + "\r\n>>> ")
        set_console(True)

    def _raw_byte(self, b):
        if b == 0x05 and not self.buf and self.paste_probe == 0:
            self.paste_probe = 1
            return
        if self.paste_probe == 1:
            self.paste_probe = 2 if b == 0x41 else 0  # "A"
            if self.paste_probe:
                return
        elif self.paste_probe == 2:
            self.paste_probe = 0
            if b == 0x01:
                _out("R\x00")  # raw-paste mode not supported: mpremote falls back
                return
        if b == 0x01:  # Ctrl-A again: restart raw mode
            self._enter_raw()
        elif b == 0x02:  # Ctrl-B: friendly REPL
            self._leave_raw()
        elif b == 0x03:  # Ctrl-C: drop the half-received program
            self.buf = bytearray()
        elif b == 0x04:
            if self.buf:
                program = bytes(self.buf)
                self.buf = bytearray()
                _out("OK")
                self._run(program)
                _out(">")
            else:
                self._soft_reset()
                _out(_RAW_BANNER)
        elif len(self.buf) < MAX_PROGRAM:
            self.buf.append(b)

    def _friendly_byte(self, b):
        if b == 0x01:
            self._enter_raw()
        elif b == 0x03:
            self.line = bytearray()
            _out("\r\nKeyboardInterrupt\r\n>>> ")
        elif b == 0x04:
            _out("MPY: soft reboot\r\n")
            raise SystemExit(REBOOT_EXIT)
        elif b == 0x02:
            _out("\r\n" + self.banner + "\r\n>>> ")
        elif b in (0x0D, 0x0A):
            line = bytes(self.line)
            self.line = bytearray()
            _out("\r\n")
            if line.strip():
                self._run_line(line)
            _out(">>> ")
        elif b in (0x08, 0x7F):
            if self.line:
                self.line = self.line[:-1]
                _out("\b \b")
        elif b >= 0x20 and len(self.line) < 1024:
            self.line.append(b)
            _out(chr(b))

    # -- execution -----------------------------------------------------------------

    def _soft_reset(self):
        self.namespace = {"__name__": "__main__"}
        _out("soft reboot\r\n")

    def _busy(self, on):
        """Tell the host bridge that a program runs (Ctrl-C then means SIGINT), or not."""
        path = self.busy_path
        if path is None:
            return
        try:
            if on:
                open(path, "w").close()
            else:
                os.remove(path)
        except OSError:
            pass
        if not on:
            # A Ctrl-C that raced with the end of the program lands here, not in the firmware.
            try:
                time.sleep_ms(5)
            except KeyboardInterrupt:
                pass

    def _exec(self, code):
        """exec inside the firmware's event loop. A program may call asyncio.run(): that
        nested loop runs the firmware's tasks too, and on return sets the loop's current
        task to None, which would break the console task's next await; restore it."""
        core = sys.modules.get("asyncio.core")
        task = core.cur_task if core is not None else None
        try:
            exec(code, self.namespace)
        finally:
            if core is not None:
                core.cur_task = task

    def _run(self, program):
        self._busy(True)
        try:
            self._exec(program)
            self._busy(False)
            _out("\x04")
        except SystemExit as e:
            self._busy(False)
            if e.args and e.args[0] == REBOOT_EXIT:  # machine.reset(): the process restarts
                _out("\x04\x04")
                raise
            _out("\x04")  # sys.exit() ends the program, not the device
        except BaseException as e:  # noqa: B036 - a REPL reports everything it runs
            self._busy(False)
            _out("\x04")
            sys.print_exception(e)
        _out("\x04")

    def _run_line(self, line):
        self._busy(True)
        try:
            self._run_line_busy(line)
        finally:
            self._busy(False)

    def _run_line_busy(self, line):
        try:
            try:
                code = compile(line, "<stdin>", "eval")
            except SyntaxError:
                self._exec(line)
                return
            value = eval(code, self.namespace)
            if value is not None:
                _out(repr(value) + "\r\n")
        except SystemExit as e:
            if e.args and e.args[0] == REBOOT_EXIT:
                raise
        except BaseException as e:  # noqa: B036
            sys.print_exception(e)


async def serve_stdin(repl):
    """Feed the REPL from stdin without blocking the event loop.

    stdin is the host launcher's pipe: its end means the launcher is gone, and the device
    process ends too rather than run on unsupervised, holding its ports and flash image.
    """
    import asyncio
    import select

    src = sys.stdin.buffer
    poller = select.poll()
    poller.register(src, select.POLLIN)
    reader = asyncio.StreamReader(src)
    chunk = bytearray()
    while True:
        first = await reader.read(1)
        if not first:
            raise SystemExit(0)
        chunk = bytearray(first)
        while len(chunk) < 512 and poller.poll(0):
            b = src.read(1)
            if not b:
                break
            chunk += b
        repl.feed(chunk)
