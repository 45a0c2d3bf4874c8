"""The host's one way to a device's console: the unmodified `mpremote`, run as a command.

Everything that talks to a door's MicroPython REPL goes through here: deploy
(host_tools/deploy.py), commissioning and provisioning (host_tools/door_stage.py,
host_tools/vdev/provision.py), the self-test, the benches and the HIL rig. It gives them
the same port checks, the same handshake (a raw REPL answers before mpremote is let loose on
the port) and the same one-line errors, and the atomic file write (temporary file, rename).
What the host asks a running firmware goes through `call`, by name, to firmware/console.py
(status, self report, log lines, relay test, set time, journal wipe...): this is the one
host module that holds a firmware import string.

`mpremote` is run as a command, not imported: its command line is the interface it keeps
stable across releases (its Python modules were renamed and reorganised between 1.19 and
1.2x), its errors arrive as text we can turn into one line, and it cannot leave our process
with a half-open serial port.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from host_tools.errors import EXIT_MISSING_TOOL, EXIT_NO_DEVICE, UserError

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))
DEFAULT_TIMEOUT_S = 120.0

RAW_BANNER = b"raw REPL; CTRL-B to exit"
ANSWER_WAIT_S = 3.0  # for a first byte after Ctrl-C, Ctrl-A (a board may still be booting)
QUIET_S = 0.5  # no more bytes for this long: the device has said what it has to say
ROUND_MAX_S = 8.0

# Runs on the device: replace a file by its new version atomically (rename over it).
_REPLACE_PROGRAM = """import os
os.rename(%r,%r)
"""


def mpremote(port: str, *args: str, timeout: float = DEFAULT_TIMEOUT_S,
             idempotent: bool = True) -> str:
    """Run `mpremote connect PORT ARGS…` and return its output; its failures become one-line
    UserErrors.

    An `idempotent` step that meets a MemoryError on the device (the heap beside a running
    firmware is small and fragmented) is run once more; a step that is not (a piece appended
    to a file) is not.
    """
    for attempt in (1, 2):
        try:
            proc = subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True,
                                  text=True, timeout=timeout)
        except FileNotFoundError:
            raise UserError("mpremote is not installed: run ./dev setup",
                            EXIT_MISSING_TOOL) from None
        except subprocess.TimeoutExpired:
            raise UserError(f"nothing answers on {port} (no reply for {timeout:.0f} s): is the "
                            "device powered and not busy? (check the cable, close other serial "
                            "terminals, then run the command again)", EXIT_NO_DEVICE) from None
        if proc.returncode == 0:
            return proc.stdout
        if "MemoryError" not in proc.stdout + proc.stderr or attempt == 2 or not idempotent:
            break
    if "MemoryError" in proc.stdout + proc.stderr:
        raise UserError(f"the device on {port} ran out of memory: run the command again; if it "
                        "repeats, start the board in safe mode (hold REX at power-up) and "
                        "run it again")
    raise _mpremote_error(port, proc.stdout, proc.stderr)


def _mpremote_error(port: str, stdout: str, stderr: str) -> UserError:
    text = (stdout + stderr).strip()
    last = text.splitlines()[-1] if text else "no output"
    if "could not enter raw repl" in text:
        # mpremote prints what it received instead of the raw-REPL banner.
        if any(line.strip() == "b''" for line in stdout.splitlines()):
            return UserError(f"nothing answers on {port}: is the device powered and running "
                             "MicroPython? (check the cable, press the board's reset)",
                             EXIT_NO_DEVICE)
        return UserError(f"the device on {port} is not running MicroPython (no raw REPL): "
                         "flash MicroPython onto it first (see docs/hardware.md)",
                         EXIT_NO_DEVICE)
    if "failed to access" in text or "No such file" in text or "no device found" in text:
        return UserError(f"cannot open {port}: {last}", EXIT_NO_DEVICE)
    return UserError(f"mpremote failed on {port}: {last}")


# Runs on the device: one named call of firmware/console.py, which prints `CALL <json>`; the
# module is dropped again afterwards, so the door's heap is as it was before the call.
_CALL_PROGRAM = """import sys
try:
 import firmware.console as c
 f=c.%s
except (ImportError,AttributeError):
 f=None
 print('CALL-UNKNOWN')
try:
 if f:f(%s)
finally:
 c=f=None
 if sys.modules.pop('firmware.console',None):
  import firmware
  del firmware.console
"""
_CALL_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
CallArg = None | bool | int | float | str


def _call_program(name: str, args: tuple[CallArg, ...]) -> str:
    """The console program of a named call: its arguments are written as literals (repr of
    simple values), never as code."""
    if not _CALL_NAME.match(name):
        raise ValueError(f"not a console call name: {name!r}")
    for a in args:
        # Exact types: a subclass could bring its own repr, which would then be pasted as code.
        if not (a is None or type(a) in (bool, int, str)
                or (type(a) is float and math.isfinite(a))):
            raise ValueError(f"console call {name}: {object.__repr__(a)} is not a simple value")
    return _CALL_PROGRAM % (name, ",".join(repr(a) for a in args))


def answer(port: str, name: str, out: str) -> Any:
    """The value a named call printed (its `CALL ` line, as JSON), or one clear line."""
    found = None
    for line in out.splitlines():
        if line.strip() == "CALL-UNKNOWN":
            raise UserError(f"the door on {port} has no console call {name!r}: deploy this "
                            "version of the firmware onto it (doorctl deploy)")
        if line.startswith("CALL "):
            found = line[5:]
    if found is None:
        raise UserError(f"the door on {port} gave no answer to {name!r}: is its firmware "
                        "running? (deploy it first)")
    try:
        return json.loads(found)
    except ValueError:
        raise UserError(f"the door on {port} answered {name!r} with something that is not "
                        f"JSON: {found[:80]!r}") from None


def call(port: str, name: str, *args: CallArg, timeout: float = DEFAULT_TIMEOUT_S,
         idempotent: bool = True) -> Any:
    """Run the named console call `name(*args)` of firmware/console.py on the door and
    return what it answered (parsed JSON); the host never reaches into firmware internals."""
    program = _call_program(name, args)
    return answer(port, name, mpremote(port, "exec", program, timeout=timeout,
                                       idempotent=idempotent))


def open_call(port: str, name: str, *args: CallArg) -> subprocess.Popen[str]:
    """A named call left running, its output readable line by line (a call that holds the
    console, such as `wipe_journal`); `answer` parses its `CALL ` line."""
    program = _call_program(name, args)
    try:
        return subprocess.Popen([MPREMOTE, "connect", port, "exec", program],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError:
        raise UserError("mpremote is not installed: run ./dev setup",
                        EXIT_MISSING_TOOL) from None


def check_port(port: str) -> None:
    """A device path that is not there is one clear line, before anything waits on it."""
    if port.startswith("/dev/") and not os.path.exists(port):
        raise UserError(f"port {port} does not exist: check the USB cable, then list ports with "
                        "`ls /dev/ttyUSB* /dev/ttyACM*`", EXIT_NO_DEVICE)


def handshake(port: str) -> None:
    """Check, before mpremote runs, that a MicroPython raw REPL answers on `port`.

    mpremote blocks forever on a pty where nothing answers, and reports "could not enter raw
    repl" both for a silent port and for a device that is not MicroPython. Here: Ctrl-C
    (stop a running program), Ctrl-A (enter the raw REPL), look for its banner, Ctrl-B (back
    to the normal REPL, as mpremote expects to find it).
    """
    import serial  # pyserial, installed with mpremote

    try:
        link = serial.serial_for_url(port, baudrate=115200, timeout=0.05, exclusive=True)
    except (OSError, serial.SerialException, ValueError) as e:
        reason = str(e).split(": ", 1)[-1] if str(e) else type(e).__name__
        raise UserError(f"cannot open {port}: {reason} (is another program using it? close "
                        "serial terminals and other doorctl commands)", EXIT_NO_DEVICE) from None
    received = b""
    try:
        for _ in (1, 2):  # the second round covers a board that was still booting
            link.write(b"\r\x03\x03")
            time.sleep(0.1)
            link.write(b"\r\x01")
            start = last = time.monotonic()
            while True:
                chunk = link.read(256)
                now = time.monotonic()
                if chunk:
                    received = (received + chunk)[-4096:]
                    last = now
                    if RAW_BANNER in received:
                        link.write(b"\r\x02")
                        link.flush()
                        return
                    if now - start > ROUND_MAX_S:
                        break  # a device that talks on and on, but never a raw REPL
                elif (received and now - last > QUIET_S) or now - start > ANSWER_WAIT_S:
                    break
    except (OSError, serial.SerialException) as e:
        raise UserError(f"cannot talk to {port}: {e}", EXIT_NO_DEVICE) from None
    finally:
        link.close()
    if not received:
        raise UserError(f"nothing answers on {port}: is the device powered and running "
                        "MicroPython? (check the cable, press the board's reset)", EXIT_NO_DEVICE)
    raise UserError(f"the device on {port} is not running MicroPython (no raw REPL): flash "
                    "MicroPython onto it first (see docs/hardware.md)", EXIT_NO_DEVICE)


def connect(port: str) -> None:
    """The port exists and a MicroPython raw REPL answers on it: one clear line otherwise."""
    check_port(port)
    handshake(port)


def write_file(port: str, path: str, data: bytes, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """`path` on the device (relative to its working directory) holds `data`, all of it or,
    after a cut at any instant, its old content: written beside it as PATH.tmp, then renamed
    over it."""
    with tempfile.TemporaryDirectory(prefix="doorctl-console-") as tmp:
        src = Path(tmp) / "file"
        src.write_bytes(data)
        mpremote(port, "fs", "cp", "-f", str(src), ":" + path + ".tmp", timeout=timeout)
    mpremote(port, "exec", _REPLACE_PROGRAM % (path + ".tmp", path), timeout=timeout)
