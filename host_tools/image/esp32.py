"""Writing a door firmware image to an ESP32: what goes where, and the esptool commands.

The ESP-IDF build of `board/esp32` (docs/deploy.md) gives `firmware.bin`: the bootloader
from 0x1000, the partition table at 0x8000 and MicroPython with the application frozen in
at 0x10000, in one file that starts at 0x1000. `doorctl flash --image` splits it, puts the
repository's own partition table (board/esp32_partitions.csv) in the table's place, writes
the three with esptool's `write-flash` and reads them back with `verify-flash`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from host_tools.errors import EXIT_USAGE, UserError
from host_tools.image import partitions as pt

BOOTLOADER_OFFSET = 0x1000
APP_OFFSET = 0x10000
ESP_IMAGE_MAGIC = 0xE9


@dataclass(frozen=True)
class Region:
    name: str
    offset: int
    data: bytes


def split_image(data: bytes, table: bytes) -> list[Region]:
    """The regions to write for a combined `firmware.bin`, the table replaced by `table`.

    UserError when the file is not such an image, or when the table inside it describes
    another layout (an image built for another board would not find its partitions)."""
    if len(data) < APP_OFFSET - BOOTLOADER_OFFSET + 1 or data[0] != ESP_IMAGE_MAGIC:
        raise UserError("not an ESP32 firmware image from the board/esp32 build (firmware.bin: "
                        "bootloader, partition table and application from 0x1000)", EXIT_USAGE)
    boot = data[:pt.TABLE_OFFSET - BOOTLOADER_OFFSET].rstrip(b"\xff")
    inner = data[pt.TABLE_OFFSET - BOOTLOADER_OFFSET:APP_OFFSET - BOOTLOADER_OFFSET]
    app = data[APP_OFFSET - BOOTLOADER_OFFSET:]
    if app[:1] != bytes([ESP_IMAGE_MAGIC]):
        raise UserError("the image has no application at 0x10000: use the firmware.bin of the "
                        "board/esp32 build", EXIT_USAGE)
    ours = pt.from_binary(table)
    theirs = pt.from_binary(inner)
    if theirs != ours:
        raise UserError("the image was built with another partition table than "
                        "board/esp32_partitions.csv: rebuild it from board/esp32", EXIT_USAGE)
    factory = next(p for p in ours if p.type == pt.TYPES["app"])
    if len(app) > factory.size:
        raise UserError(f"the application ({len(app)} bytes) is larger than its partition "
                        f"({factory.size} bytes)", EXIT_USAGE)
    return [Region("bootloader", BOOTLOADER_OFFSET, boot), Region("partition table", pt.TABLE_OFFSET, table),
            Region("application", APP_OFFSET, app)]


def write_files(regions: list[Region], folder: Path) -> list[tuple[int, Path]]:
    out = []
    for r in regions:
        path = folder / f"{r.offset:#07x}-{r.name.replace(' ', '-')}.bin"
        path.write_bytes(r.data)
        out.append((r.offset, path))
    return out


def esptool_commands(port: str, baud: int, files: list[tuple[int, Path]]) -> list[list[str]]:
    """The esptool argument lists: write every region, then read every region back."""
    pairs = [a for off, path in files for a in (f"{off:#x}", str(path))]
    base = ["--chip", "esp32", "--port", port, "--baud", str(baud)]
    return [[*base, "write-flash", "--flash-size", "16MB", *pairs], [*base, "verify-flash", *pairs]]
