"""The bare-metal board: MicroPython's qemu port on an MPS2-AN385 (Cortex-M3) under QEMU.

It proves the firmware runs on a microcontroller and gives instruction counts that do not
move with the host's load (`doorctl build mcu`, `doorctl mcu run`, docs/mcu.md).

- flash: two partitions of the board's PSRAM behind `mps2.Flash` (NOR rules: erase to 0xFF,
  programming only clears bits): littlefs mounted at /flash, and a raw one for the journal;
- door I/O: held in memory (there are no pins): a script sets the inputs and reads the
  outputs, as a test bench would;
- no network: the port has no socket, ssl or network module, so the uplink (MQTT, TLS) is
  not part of this board. The journal keeps every event; nothing is sent.
- no reader UART: a script that needs a card drives the card session itself;
- no entropy: `os.urandom` is the port's fixed-seed generator, so runs repeat exactly. Fine
  for a test board, never for a product.
"""

import os
import time

import mps2

from board import interface

# What this board needs on the device, read by the image manifest without importing this
# module (host_tools/boards.py, docs/architecture.md "Boards").
PLATFORM = "qemu"
PACKAGES = ("firmware", "wire", "card_reader", "journal_format", "ticks", "crypto", "offline_cache")
DEVICE_FILES = ()
ENTRY = None  # scripts are run over the console (doorctl mcu run)

FLASH_BLOCKS = 1024  # 4 MiB of 4 KiB erase blocks for littlefs (a 100k whitelist + an update)
JOURNAL_BLOCKS = 397  # as on the virtual board: 50,000 events of 32 bytes + spare + ack area
BLOCK = 4096


class Clock(interface.Clock):
    """ticks_ms from the port's SysTick; wall time only once the application sets it."""

    def __init__(self):
        self._offset = None  # epoch seconds at ticks 0

    def time(self):
        if self._offset is None:
            return None
        return self._offset + time.ticks_ms() / 1000

    def set_time(self, epoch, trusted=True):
        self._offset = epoch - time.ticks_ms() / 1000
        self.trusted = trusted


class Output:
    def __init__(self):
        self.state = False
        self.changes = 0

    def set(self, value):
        if value != self.state:
            self.state = value
            self.changes += 1

    def value(self):
        return self.state


class Input:
    def __init__(self, value):
        self.state = value

    def read(self):
        return self.state


def partitions(flash_blocks=FLASH_BLOCKS, journal_blocks=JOURNAL_BLOCKS):
    """The littlefs partition and the journal's raw partition, one after the other."""
    fs = mps2.Flash(0, flash_blocks * BLOCK, BLOCK)
    journal = mps2.Flash(flash_blocks * BLOCK, journal_blocks * BLOCK, BLOCK)
    return fs, journal


class McuBoard(interface.Board):
    name = "mcu-qemu"
    fs_root = "/flash"

    def __init__(self, flash_blocks=FLASH_BLOCKS, journal_blocks=JOURNAL_BLOCKS):
        self.clock = Clock()
        self.relay = Output()
        self.buzzer = Output()
        self.led = Output()
        self.door_contact = Input("closed")
        self.rex = Input(False)
        self.tamper = Input(False)
        self.fire = Input(False)
        self.power = Input(True)
        self.blockdev, self.journal_dev = partitions(flash_blocks, journal_blocks)
        self.boot_count = 0

    def mount(self):
        """Mount littlefs at /flash, formatting it on first use (fresh PSRAM is all zeros)."""
        import vfs

        try:
            vfs.mount(vfs.VfsLfs2(self.blockdev), self.fs_root)
        except OSError:
            vfs.VfsLfs2.mkfs(self.blockdev)
            vfs.mount(vfs.VfsLfs2(self.blockdev), self.fs_root)
        os.chdir(self.fs_root)
        self.boot_count += 1
