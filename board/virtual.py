"""The virtual reference board: the firmware's board interface on the MicroPython unix port.

- flash: a NOR-flash simulator image (`flash.img`) carrying littlefs, mounted at /flash, and a
  second raw partition (`journal.img`) for the event journal, both in the state directory;
- door I/O: a loopback TCP channel speaking JSON lines (docs/virtual-device.md): the host
  sets inputs and is told of every output change with its timestamp;
- reader UART: a loopback TCP byte stream that the host's PN532 emulator connects to.

Both links are C on the unix32 image (`vboard.IOHub`, `vboard.ReaderLink`), as an ESP32's
drivers are, and Python elsewhere (board/vdev/pylinks.py).
"""

import asyncio
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
                "board/vdev/flashsim_py.py", "board/vdev/pylinks.py",
                "board/vdev/rawrepl.py", "board/vdev/rom.py")
ENTRY = None  # the launcher runs board/vdev/boot.py from the host (host_tools/vdev/device.py)

FLASH_BLOCKS = 512  # 2 MiB of 4 KiB erase blocks for littlefs
JOURNAL_BLOCKS = 397  # 50,000 events of 32 bytes + a spare sector + the ack area
ROM_BLOCKS = 64  # two 256 KiB ROM partitions for the application's ROMFS image (board/vdev/rom.py)


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


try:
    # The host links in C on the unix32 image (board/unix32/cmodules/vboard/modlinks.c): their
    # servers, streams and queues stay out of the MicroPython heap the image measures, as an
    # ESP32's UART ring does (and an ESP32 has no I/O channel at all).
    from vboard import IOHub as _IOHub, ReaderLink as _ReaderLink
except ImportError:
    _IOHub = _ReaderLink = None


def _readable(obj):
    """Awaitable: until asyncio's poller finds `obj` (a stream with a file number) readable."""
    yield asyncio.core._io_queue.queue_read(obj)


class LinkUART:
    """The PN532 link on the unix32 image: a `vboard.ReaderLink` (C) read through an asyncio
    stream, as the ESP32 board reads its UART; received bytes wait in the socket's kernel
    buffer, as in a UART driver's ring."""

    def __init__(self, port):
        self._link = _ReaderLink(port)
        self._stream = asyncio.StreamReader(self._link)

    def connected(self):
        return self._link.connected()

    def write(self, data):
        return self._link.write(data)  # all at once: the socket takes a frame whole

    async def drain(self):
        await asyncio.sleep_ms(0)  # written already; a drain still yields, as a stream's does

    def any(self):
        return self._link.any()

    def reset_input(self):
        self._link.reset_input()

    async def read(self, n, timeout_ms=None):
        """Up to n bytes; waits for at least one (or returns b"" after timeout_ms)."""
        if timeout_ms is None:
            return await self._stream.read(n)
        return await interface.read_polled(self._link, n, timeout_ms)


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
        if _IOHub is not None:
            self.io = _IOHub(io_port)  # listening from here; answered once serve() runs
            pin = self.io.pin
            self.reader_uart = LinkUART(reader_port)
        else:
            from board.vdev import pylinks

            self.io = pylinks.IOChannel(self.clock)

            def pin(name):
                return (pylinks.Input if name in pylinks.INPUT_DEFAULTS else pylinks.Output)(self.io, name)

            self.reader_uart = pylinks.ReaderUART()
        self.relay = pin("relay")
        self.buzzer = pin("buzzer")
        self.led = pin("led")
        self.door_contact = pin("door_contact")
        self.rex = pin("rex")
        self.tamper = pin("tamper")
        self.fire = pin("fire")
        self.power = pin("power")
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
        if _IOHub is None:
            from board.vdev import pylinks

            await pylinks.serve(self)
        else:  # both links listen from the board's start; one task answers the channel
            asyncio.create_task(_answer_io(self.io))


async def _answer_io(hub):
    while True:
        if hub.serve():  # a request still waits: the firmware runs, then the next
            await asyncio.sleep_ms(0)
        else:
            await _readable(hub)


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
