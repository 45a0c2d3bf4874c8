"""Launch and supervise a virtual door controller: a real MicroPython process on a pty.

The console is a pty whose other side is this bridge: bytes from the pty go to the
process's stdin, the process's stdout comes back to the pty. The bridge keeps the pty open
across client connections (mpremote opens and closes it for every command) and across
device reboots (the process is restarted on the same pty when it exits with the reboot
status). The flash images live in the state directory, so a stopped device keeps its data.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import termios
import threading
import time
import tty
from pathlib import Path
from types import TracebackType

from host_tools.errors import UserError
from host_tools.mpy_build import build_device_tree
from host_tools.paths import REPO_ROOT, micropython, micropython_env
from host_tools.services import free_port
from host_tools.services._proc import bindable

REBOOT_EXIT = 75
# The commissioned firmware with its uplink connected idles at about 220 KiB on this 64-bit
# port, and a TLS handshake or a console program beside it needs more: 256K ran out
# (docs/virtual-device.md, "Heap"). 384K since 3 December: the door now keeps about 20 KiB more
# made at boot on this port (uplink rx/tx buffers, the cache's update buffers, the content hash
# and per-door key code), and a 1 KiB `keys` argument no longer found room beside it at 320K.
DEFAULT_HEAP = "384K"
# The interpreters a virtual device runs on: the PyPI unix port (64-bit, code from .mpy
# files or sources) or the 32-bit firmware image with the application frozen in
# (`doorctl build unix32`, built here when missing or stale).
IMAGES = ("pypi", "unix32")
# Test fixtures (and `pytest --image`) choose the image through this variable.
IMAGE_ENV = "DOORCTL_TEST_IMAGE"
# On the 32-bit image the code is in the image, not the heap; TLS still needs its buffers.
DEFAULT_HEAP_UNIX32 = "160K"
BOOT_SCRIPT = REPO_ROOT / "board" / "vdev" / "boot.py"
VDEV_LIB = REPO_ROOT / "board" / "vdev" / "lib"
LOCK_FILE = "vdev.lock"


class VirtualDeviceError(RuntimeError):
    """The virtual device could not start or died."""


def selected_image() -> str:
    """The image test fixtures run virtual doors on: $DOORCTL_TEST_IMAGE, else pypi."""
    return os.environ.get(IMAGE_ENV) or "pypi"


def unix32_binary() -> str:
    """The unix32 image's binary, built first when missing or stale (one line on failure)."""
    from host_tools.image.steps import Steps
    from host_tools.image.unix32 import build_unix32

    try:
        return str(build_unix32(Steps(quiet=True)).binary)
    except UserError as e:
        raise VirtualDeviceError(str(e)) from None


class VirtualDevice:
    def __init__(self, state_dir: str | Path, heap: str | None = None, io_port: int | None = None,
                 reader_port: int | None = None, from_source: bool = False, image: str = "pypi") -> None:
        if image not in IMAGES:
            raise VirtualDeviceError(f"unknown image {image!r}: choose pypi (the PyPI 64-bit "
                                     "interpreter) or unix32 (the 32-bit firmware image)")
        if image == "unix32" and from_source:
            raise VirtualDeviceError("the unix32 image runs its frozen code: --source applies to "
                                     "the pypi image only")
        self.image = image
        self.state_dir = Path(state_dir).resolve()
        self.heap = heap or (DEFAULT_HEAP_UNIX32 if image == "unix32" else DEFAULT_HEAP)
        self._binary: str | None = None
        self.io_port = io_port or free_port()
        self.reader_port = reader_port or free_port()
        self._own_ports = (io_port is None, reader_port is None)  # chosen here: may be chosen again
        self.from_source = from_source
        self.boots = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self.pty = ""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.console_log = bytearray()
        self._busy_file = self.state_dir / "console.busy"
        self._drained = threading.Event()  # the running process's output is all read
        self._lock_fd: int | None = None  # flock on STATE_DIR/vdev.lock while we run it

    # -- lifecycle -----------------------------------------------------------------

    @property
    def io_addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.io_port)

    @property
    def reader_addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.reader_port)

    def start(self, timeout_s: float = 20.0) -> VirtualDevice:
        if self.state_dir.exists() and not self.state_dir.is_dir():
            raise VirtualDeviceError(f"state path {self.state_dir} is not a directory")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        if self._master is None:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            os.set_blocking(self._master, False)
            self.pty = os.ttyname(self._slave)
            self._stop.clear()
            t = threading.Thread(target=self._pty_to_device, daemon=True)
            t.start()
            self._threads.append(t)
        self._spawn()
        self.wait_ready(timeout_s)
        self._write_info()
        return self

    def _take_lock(self) -> None:
        """One running device per state directory: two processes on one flash image would
        corrupt it and both would connect as the same door. The kernel drops the lock when
        its holder dies, so a killed launcher leaves nothing stale behind."""
        if self._lock_fd is not None:
            return
        path = self.state_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise VirtualDeviceError(
                f"another virtual device already runs on {self.state_dir} (launcher pid "
                f"{holder}): stop it first, or use another --state directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _write_info(self) -> None:
        (self.state_dir / "vdev.json").write_text(json.dumps(self.describe(), indent=2))

    def describe(self) -> dict[str, object]:
        return {"console": self.pty, "io": f"127.0.0.1:{self.io_port}",
                "reader": f"127.0.0.1:{self.reader_port}", "state": str(self.state_dir),
                "pid": self._proc.pid if self._proc else None, "boots": self.boots,
                "image": self.image}

    def _command(self) -> tuple[list[str], dict[str, str]]:
        """The interpreter command line and environment for this device's image."""
        args = [str(self.state_dir), str(self.io_port), str(self.reader_port)]
        if self.image == "unix32":
            if self._binary is None:
                self._binary = unix32_binary()
            # Everything from the image: only its frozen modules on the path (a deployed
            # /flash/lib still comes first, as on a board).
            env = dict(os.environ, MICROPYPATH=".frozen")
            return [self._binary, "-X", f"heapsize={self.heap}", "-m", "board.vdev.boot", *args], env
        paths: list[str | Path] = [VDEV_LIB]
        if not self.from_source:
            paths.append(build_device_tree()[0].parents[1])
        return ([micropython(), "-X", f"heapsize={self.heap}", str(BOOT_SCRIPT), *args],
                micropython_env(*paths))

    def _spawn(self) -> None:
        self._ports_again()  # every boot: start, restart, stop then start, the board's own reset
        ready = self.state_dir / "ready.json"
        ready.unlink(missing_ok=True)
        self._busy_file.unlink(missing_ok=True)
        cmd, env = self._command()
        with open(self.state_dir / "stderr.log", "ab") as err:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                env=env, cwd=str(self.state_dir), bufsize=0,
                # Its own process group: a Ctrl-C in the launcher's terminal stops the
                # launcher, which stops the device, rather than interrupting the firmware.
                start_new_session=True,
            )
        self.boots += 1
        self._drained.clear()
        t = threading.Thread(target=self._device_to_pty, args=(self._proc,), daemon=True)
        t.start()
        self._threads.append(t)

    def wait_ready(self, timeout_s: float = 20.0) -> dict[str, object]:
        ready = self.state_dir / "ready.json"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready.exists():
                try:
                    return dict(json.loads(ready.read_text()))
                except ValueError:
                    pass
            proc = self._proc
            if proc is not None and proc.poll() is not None and proc.returncode != REBOOT_EXIT:
                raise VirtualDeviceError(
                    f"the virtual device exited with status {proc.returncode} while starting "
                    f"({self.last_error()}); try a larger --heap or a fresh --state directory; "
                    f"output in {self.state_dir}/console.log and stderr.log")
            time.sleep(0.02)
        raise VirtualDeviceError(f"the virtual device was not ready after {timeout_s:.0f} s "
                                 f"({self.last_error()}); output in {self.state_dir}/console.log "
                                 "and stderr.log")

    def last_error(self) -> str:
        """The last line the device printed (stderr, else console): one line for messages.

        Also saves the console output to console.log in the state directory."""
        self._drained.wait(2.0)  # let the bridge read what the process wrote before exiting
        with self._lock:
            console = bytes(self.console_log)
        (self.state_dir / "console.log").write_bytes(console)
        for text in (self.stderr_tail(), console.decode(errors="replace")):
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if lines:
                return lines[-1]
        return "no output"

    def stderr_tail(self, n: int = 800) -> str:
        log = self.state_dir / "stderr.log"
        return log.read_text(errors="replace")[-n:] if log.exists() else ""

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """Power cut: SIGKILL. The flash images keep exactly what was written."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def restart(self, timeout_s: float = 20.0) -> None:
        """Power-cycle: cut the power if it is on, then boot again on the same flash.

        After `kill()` (or while running) the console keeps its pty; after `stop()` the
        device gets a new pty, as `start()` does.
        """
        self.kill()
        if self._master is None:
            self.start(timeout_s)
            return
        self._spawn()
        self.wait_ready(timeout_s)
        self._write_info()

    def _ports_again(self) -> None:
        """A port chosen here and taken by another process while the door was off (a busy
        machine's tests pick ports too) is chosen again, so the door boots with its servers;
        the caller reads `io_addr`/`reader_addr` after a boot. Ports given by the user stay."""
        own_io, own_reader = self._own_ports
        if own_io and not bindable(self.io_port):
            self.io_port = free_port()
        if own_reader and not bindable(self.reader_port):
            self.reader_port = free_port()

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Join the bridge threads before closing: a closed fd number is reused at once by
        # the next pty, and a late reader here would steal its bytes.
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(2)
        self._threads = []
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        self._release_lock()

    def __enter__(self) -> VirtualDevice:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- the console bridge --------------------------------------------------------

    def _pty_to_device(self) -> None:
        while not self._stop.is_set():
            master = self._master
            if master is None:
                return
            try:
                ready, _, _ = select.select([master], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)
                continue
            proc = self._proc
            if proc is None or proc.stdin is None:
                continue
            if b"\x03" in data and self._busy_file.exists() and proc.poll() is None:
                # A console program runs and keeps the REPL from reading: interrupt it the
                # way a board's UART interrupt does (KeyboardInterrupt in the program).
                proc.send_signal(signal.SIGINT)
            try:
                proc.stdin.write(data)
                proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # the device is rebooting; like a UART, bytes sent meanwhile are lost

    def _write_console(self, data: bytes) -> None:
        """Write to the pty; when nobody reads it and it is full, old output is dropped
        (like a UART with nothing attached) rather than stalling the device."""
        master, slave = self._master, self._slave
        if master is None or slave is None:
            return
        view = memoryview(data)
        for _ in range(100):
            try:
                n = os.write(master, view)
            except BlockingIOError:
                termios.tcflush(slave, termios.TCIFLUSH)
                continue
            except OSError:
                return
            view = view[n:]
            if not view:
                return

    def _device_to_pty(self, proc: subprocess.Popen[bytes]) -> None:
        out = proc.stdout
        assert out is not None
        while True:
            data = out.read1(4096) if hasattr(out, "read1") else out.read(1)
            if not data:
                break
            with self._lock:
                self.console_log += data
                del self.console_log[:-65536]
            self._write_console(data)
        proc.wait()
        if proc is self._proc:
            self._drained.set()
        if proc.returncode == REBOOT_EXIT and not self._stop.is_set() and proc is self._proc:
            self._spawn()  # the board reboots itself (machine.reset, Ctrl-D)
