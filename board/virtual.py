"""The virtual reference board: the firmware's board interface on the MicroPython unix port.

- flash: a NOR-flash simulator image (`flash.img`) carrying littlefs, mounted at /flash, and a
  second raw partition (`journal.img`) for the event journal, both in the state directory;
- door I/O: a loopback TCP channel speaking JSON lines (docs/virtual-device.md): the host
  sets inputs and is told of every output change with its timestamp;
- reader UART: a loopback TCP byte stream that the host's PN532 emulator connects to.
"""

import asyncio
import json
import os
import sys
import time

from board import interface
from board.vdev.flashsim import FlashSim, mount

# What this board needs on the device, read by deploy and the image manifest without
# importing this module (host_tools/boards.py, docs/architecture.md "Boards"). The console
# (rawrepl) comes from the deployed set, like the firmware.
PLATFORM = "linux"
PACKAGES = ("firmware", "wire", "card_reader", "journal_format", "ticks", "crypto", "offline_cache")
DEVICE_FILES = ("board/romfs.py", "board/vdev/__init__.py", "board/vdev/flashsim.py",
                "board/vdev/flashsim_py.py",
                "board/vdev/rawrepl.py", "board/vdev/rom.py")
ENTRY = None  # the launcher runs board/vdev/boot.py from the host (host_tools/vdev/device.py)

FLASH_BLOCKS = 512  # 2 MiB of 4 KiB erase blocks for littlefs
JOURNAL_BLOCKS = 397  # 50,000 events of 32 bytes + a spare sector + the ack area
ROM_BLOCKS = 64  # two 256 KiB ROM partitions for the application's ROMFS image (board/vdev/rom.py)
OUTBOX_MAX = 256  # pending output notifications kept for a slow channel client
RX_BYTES = 512  # the reader link's receive buffer: the ESP32 board's UART rxbuf (a PN532 frame is at most 262 bytes)

INPUT_DEFAULTS = {
    "door_contact": "closed",
    "rex": False,
    "tamper": False,
    "fire": False,
    "power": True,
}
CONTACT_STATES = ("closed", "open", "short", "cut")
IPPROTO_TCP = 6  # Linux's numbers: the unix port's socket module does not name them
TCP_NODELAY = 1


def _no_delay(writer):
    """The I/O channel and the reader link are request/response streams: without
    TCP_NODELAY a small write waits for the peer's delayed ACK (~40 ms on loopback)."""
    try:
        writer.s.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass


class Clock(interface.Clock):
    def __init__(self):
        self._offset = None  # epoch seconds - time.time() once set
        self.trusted = False  # set from a time the door could verify (docs/protocol.md)

    def time(self):
        if self._offset is None:
            return None
        return time.time() + self._offset

    def set_time(self, epoch, trusted=True):
        self._offset = epoch - time.time()
        self.trusted = trusted


class IOChannel:
    """Inputs set by the host; output changes pushed to every connected host client."""

    def __init__(self, clock):
        self.clock = clock
        self.inputs = dict(INPUT_DEFAULTS)
        self.outputs = {"relay": False, "buzzer": False, "led": "off"}
        self.clients = []
        self.status_provider = None
        self._wake = asyncio.Event()

    def emit(self, kind, name, value):
        line = json.dumps({"ev": kind, "name": name, "value": value,
                           "t": self.clock.ticks_ms()}) + "\n"
        for c in self.clients:
            box = c[1]
            if len(box) >= OUTBOX_MAX:
                box.pop(0)
            box.append(line)
        self._wake.set()

    def set_output(self, name, value):
        if self.outputs.get(name) != value:
            self.outputs[name] = value
            self.emit("out", name, value)

    def _handle(self, msg):
        op = msg.get("op")
        if op == "set":
            name, value = msg.get("name"), msg.get("value")
            if name not in self.inputs:
                return {"ok": False, "error": "unknown input %s" % name}
            if name == "door_contact":
                if value not in CONTACT_STATES:
                    return {"ok": False, "error": "door_contact is one of closed/open/short/cut"}
            elif not isinstance(value, bool):
                return {"ok": False, "error": "%s takes true or false" % name}
            self.inputs[name] = value
            self.emit("in", name, value)
            return {"ok": True, "t": self.clock.ticks_ms()}
        if op == "get":
            return {"ok": True, "inputs": self.inputs, "outputs": self.outputs,
                    "t": self.clock.ticks_ms()}
        if op == "status":
            st = self.status_provider() if self.status_provider else {}
            keys = msg.get("keys")
            if keys is not None:
                # Only these: a host asking after every card (the soak) needs two figures,
                # not the whole report (~800 bytes of JSON each time, in a tight heap).
                bad = not isinstance(keys, list)
                if not bad:
                    for k in keys:
                        if not isinstance(k, str):  # a list or a dict: a TypeError below,
                            bad = True  # which ended the connection without an answer
                if bad:
                    return {"ok": False, "error": "keys is a list of status names"}
                st = {k: st[k] for k in keys if k in st}
            return {"ok": True, "status": st, "t": self.clock.ticks_ms()}
        return {"ok": False, "error": "unknown op"}

    async def serve_client(self, reader, writer):
        _no_delay(writer)
        box = []
        entry = (writer, box)
        self.clients.append(entry)
        flusher = asyncio.create_task(self._flush(writer, box))
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                    reply = self._handle(msg) if isinstance(msg, dict) else {"ok": False}
                except ValueError:
                    reply = {"ok": False, "error": "not JSON"}
                reply["re"] = True
                # The line and its end queued apart: a status reply is ~800 bytes, and a copy
                # of it with "\n" beside the first was the piece a tight heap failed to give.
                box.append(json.dumps(reply))
                box.append("\n")
                self._wake.set()
        except OSError:
            pass
        finally:
            flusher.cancel()
            self.clients.remove(entry)
            try:
                writer.close()
                await writer.wait_closed()
            except OSError:
                pass

    async def _flush(self, writer, box):
        while True:
            while box:
                writer.write(box.pop(0))
            await writer.drain()  # yields: lines may have been queued meanwhile
            if box:
                continue
            # No await between this check and the wait: nothing can be queued unseen.
            self._wake.clear()
            await self._wake.wait()


class _Output:
    def __init__(self, io, name):
        self._io = io
        self._name = name

    def set(self, value):
        self._io.set_output(self._name, value)

    def value(self):
        return self._io.outputs[self._name]


class _Input:
    def __init__(self, io, name):
        self._io = io
        self._name = name

    def read(self):
        return self._io.inputs[self._name]


try:
    # The reader link's receive buffer outside the MicroPython heap on the unix32 image (C,
    # board/unix32/cmodules/vboard), as an ESP32's UART driver keeps its ring in the IDF heap.
    from vboard import RxBuffer as _RxBuffer
except ImportError:
    _RxBuffer = bytearray


class ReaderUART:
    """The PN532 link: bytes to and from whichever host emulator is connected.

    Received bytes wait in one buffer made here (`_RxBuffer`), not in a bytearray made per
    chunk received and per read: the card task polls five times a second. Bytes arrive at
    `_tail` and are taken from `_head`; only the receiving side moves `_tail` or moves bytes (a
    read taken while it waits for the socket must not shift what it is about to write after)."""

    def __init__(self):
        self._reader = None
        self._writer = None
        self._rxv = memoryview(_RxBuffer(RX_BYTES))
        self._head = 0
        self._tail = 0
        self._rx_event = asyncio.Event()

    def connected(self):
        return self._writer is not None

    def write(self, data):
        if self._writer is not None:
            self._writer.write(data)
            return len(data)
        return 0

    async def drain(self):
        if self._writer is not None:
            try:
                await self._writer.drain()
            except OSError:
                pass

    def any(self):
        return self._tail - self._head

    def reset_input(self):
        self._head = self._tail

    def _room(self):
        """Make room at the tail: the buffer starts over when empty, what is held moves down
        when the tail reached the end, and a full buffer nobody reads is dropped (a UART's
        overrun)."""
        if self._head == self._tail:
            self._head = self._tail = 0
        elif self._tail == RX_BYTES:
            held = self._tail - self._head
            if held == RX_BYTES:
                self._head = self._tail = 0
            else:
                self._rxv[:held] = self._rxv[self._head:self._tail]  # a memmove
                self._head, self._tail = 0, held

    def feed(self, data):
        """Bytes from the emulator, as the link receives them (tests feed it directly)."""
        data = memoryview(data)
        while data:
            self._room()
            k = min(len(data), RX_BYTES - self._tail)
            self._rxv[self._tail:self._tail + k] = data[:k]
            self._tail += k
            data = data[k:]
        self._rx_event.set()

    async def read(self, n, timeout_ms=None):
        """Up to n bytes; waits for at least one (or returns b"" after timeout_ms)."""
        waited = 0
        while self._head == self._tail:
            self._rx_event.clear()
            if timeout_ms is None:
                await self._rx_event.wait()
            else:
                if waited >= timeout_ms:
                    return b""
                try:
                    await asyncio.wait_for_ms(self._rx_event.wait(), timeout_ms - waited)
                except asyncio.TimeoutError:  # noqa: UP041  MicroPython's is not the builtin
                    return b""
                waited = timeout_ms  # one wait only: data or timeout
        k = min(n, self._tail - self._head)
        out = bytes(self._rxv[self._head:self._head + k])
        self._head += k
        return out

    async def serve_client(self, reader, writer):
        if self._writer is not None:
            writer.close()  # one emulator at a time
            return
        _no_delay(writer)
        self._reader, self._writer = reader, writer
        try:
            while True:
                self._room()
                got = await reader.readinto(self._rxv[self._tail:])  # straight into the buffer
                if got is None:
                    continue  # woken with nothing to read
                if not got:
                    break
                self._tail += got
                self._rx_event.set()
        except OSError:
            pass
        finally:
            self._reader = self._writer = None
            try:
                writer.close()
                await writer.wait_closed()
            except OSError:
                pass


CUT_FILE = "cut_after.txt"  # fault injection: N, the journal's N-th write of this boot is torn


def _take_cut(path):
    """The number in a one-shot cut file (removed as it is read), 0 without one: a power cut at
    the journal's N-th program or erase of this boot (docs/torture.md)."""
    try:
        with open(path) as f:
            n = int(f.read().strip() or "0")
        os.remove(path)
    except (OSError, ValueError):
        return 0
    return max(0, n)


def _blocks(path, default):
    """A flash image's own size in blocks when it is larger than `default`: a bench gives the
    board the ESP32's 8 MiB by creating a larger blank image before the first boot."""
    try:
        n = os.stat(path)[6] // 4096
    except OSError:
        return default
    return n if n > default else default


class VirtualBoard(interface.Board):
    name = "virtual"
    fs_root = "/flash"

    def __init__(self, state_dir, io_port, reader_port):
        self.state_dir = state_dir
        self.io_port = io_port
        self.reader_port = reader_port
        self.clock = Clock()
        self.io = IOChannel(self.clock)
        self.relay = _Output(self.io, "relay")
        self.buzzer = _Output(self.io, "buzzer")
        self.led = _Output(self.io, "led")
        self.door_contact = _Input(self.io, "door_contact")
        self.rex = _Input(self.io, "rex")
        self.tamper = _Input(self.io, "tamper")
        self.fire = _Input(self.io, "fire")
        self.power = _Input(self.io, "power")
        self.reader_uart = ReaderUART()
        self.blockdev = FlashSim(path=state_dir + "/flash.img",
                                 block_count=_blocks(state_dir + "/flash.img", FLASH_BLOCKS))
        self.journal_dev = FlashSim(path=state_dir + "/journal.img", block_count=JOURNAL_BLOCKS)
        cut = _take_cut(state_dir + "/" + CUT_FILE)
        if cut:
            self.journal_dev.cut_after(cut)
        self._roms = None  # the ROM partitions, opened on first use (roms())
        self.rom_image = None
        self.rom_bytes = 0
        self.boot_count = 0

    def mount(self):
        """Mount littlefs at /flash and make deployed code (/flash/lib) win over the repo."""
        mount(self.blockdev, self.fs_root)
        os.chdir(self.fs_root)
        try:
            os.mkdir(self.fs_root + "/lib")
        except OSError:
            pass
        sys.path.insert(0, self.fs_root + "/lib")
        self.boot_count = _bump_boot_count(self.fs_root + "/boot_count")

    def roms(self):
        """The two ROM partitions (flash simulators), opened on first use."""
        if self._roms is None:
            self._roms = [FlashSim(path=self.state_dir + "/rom%d.img" % n, block_count=ROM_BLOCKS)
                          for n in (0, 1)]
        return self._roms

    def mount_rom(self, record="rom.json"):
        """Run the application from a ROM partition when it holds the image `record` (a
        deployed set's rom.json, relative to the flash) names (board/romfs.py). Call after
        mount(). Returns None when the image is in use, else why not; a door never deployed
        --romfs pays only for the `vfs.rom_ioctl` shim."""
        from board.vdev import rom as vdev_rom

        vdev_rom.install(self.roms)
        try:
            os.stat(self.fs_root + "/" + record)
        except OSError:
            return "no rom.json"
        from board import romfs

        roms = self.roms()

        def partition_image(n):
            return vdev_rom.map_image(roms[n]) if 0 <= n < len(roms) else None

        image, why = romfs.adopt(partition_image, self.fs_root + "/" + record)
        # Held here as well as by the mount: the running code points into it, and a deploy
        # unmounts /rom while the firmware keeps running.
        self.rom_image = image
        self.rom_bytes = len(image) if image is not None else 0
        return why

    async def serve(self):
        await asyncio.start_server(self.io.serve_client, "127.0.0.1", self.io_port)
        await asyncio.start_server(self.reader_uart.serve_client, "127.0.0.1", self.reader_port)


def _bump_boot_count(path):
    """Boot counter on flash, replaced atomically (write temp, rename)."""
    n = 0
    try:
        with open(path) as f:
            n = int(f.read())
    except (OSError, ValueError):
        pass
    n += 1
    with open(path + ".tmp", "w") as f:
        f.write(str(n))
    os.rename(path + ".tmp", path)
    return n
