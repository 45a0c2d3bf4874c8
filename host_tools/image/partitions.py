"""The ESP32 partition table: `board/esp32_partitions.csv` to the binary the bootloader reads.

The binary format is ESP-IDF's (gen_esp32part.py): 32-byte entries (magic 0xAA50, type,
subtype, offset, size, 16-byte name, flags), then an MD5 entry (0xEBEB, 14 bytes 0xFF, the
MD5 of the entries before it), padded with 0xFF to 0xC00 bytes; it lives at 0x8000.
`doorctl flash --image` writes this table beside the image, so the repository's CSV is
always the table on the board.
"""

from __future__ import annotations

import csv
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from host_tools.errors import EXIT_USAGE, UserError
from host_tools.paths import REPO_ROOT

CSV_PATH = REPO_ROOT / "board" / "esp32_partitions.csv"
TABLE_OFFSET = 0x8000
TABLE_MAX = 0xC00  # the space ESP-IDF gives the table (0x1000 minus its own margin)
FIRST_FREE = 0x9000  # partitions start after the table's sector
FLASH_BYTES = 16 << 20  # the reference module's flash (docs/hardware.md)
ENTRY = struct.Struct("<2sBBLL16sL")
MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
TYPES = {"app": 0x00, "data": 0x01}
SUBTYPES = {
    "app": {"factory": 0x00, "test": 0x20, **{f"ota_{i}": 0x10 + i for i in range(16)}},
    "data": {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04,
             "efuse": 0x05, "undefined": 0x06, "esphttpd": 0x80, "fat": 0x81, "spiffs": 0x82,
             "littlefs": 0x83},
}
FLAGS = {"encrypted": 0x01, "readonly": 0x02}


@dataclass(frozen=True)
class Partition:
    name: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0


def _number(text: str, what: str) -> int:
    text = text.strip()
    try:
        if text[-1:].upper() in ("K", "M"):
            return int(text[:-1], 0) * (1024 if text[-1].upper() == "K" else 1 << 20)
        return int(text, 0)
    except ValueError:
        raise UserError(f"partition table: {what} {text!r} is not a number", EXIT_USAGE) from None


def parse_csv(text: str) -> list[Partition]:
    """Partitions of an ESP-IDF CSV (comments and blank lines skipped); UserError on any
    entry the bootloader would not accept, or overlaps, misalignment, or beyond the flash."""
    parts: list[Partition] = []
    rows = [r for r in csv.reader(ln for ln in text.splitlines()
                                  if ln.strip() and not ln.lstrip().startswith("#"))]
    for row in rows:
        cells = [c.strip() for c in row]
        if len(cells) < 5:
            raise UserError(f"partition table: {','.join(cells)!r} needs name, type, subtype, "
                            "offset, size", EXIT_USAGE)
        name, ptype, psub, offset, size = cells[:5]
        if not name or len(name.encode()) > 16:
            raise UserError(f"partition table: name {name!r} must be 1..16 bytes", EXIT_USAGE)
        type_no = TYPES.get(ptype) if ptype in TYPES else _number(ptype, "type")
        assert type_no is not None
        known = SUBTYPES.get(ptype, {})
        sub_no = known[psub] if psub in known else _number(psub, "subtype")
        flags = 0
        for flag in (c for c in (cells[5].split(":") if len(cells) > 5 else []) if c):
            if flag not in FLAGS:
                raise UserError(f"partition table: unknown flag {flag!r}", EXIT_USAGE)
            flags |= FLAGS[flag]
        if not offset:
            raise UserError(f"partition table: {name} has no offset (give every offset)", EXIT_USAGE)
        parts.append(Partition(name, type_no, sub_no, _number(offset, "offset"), _number(size, "size"),
                               flags))
    check(parts)
    return parts


def check(parts: list[Partition]) -> None:
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        raise UserError("partition table: a partition name is used twice", EXIT_USAGE)
    if not any(p.type == TYPES["app"] for p in parts):
        raise UserError("partition table: no app partition to boot", EXIT_USAGE)
    end = FIRST_FREE
    for p in sorted(parts, key=lambda p: p.offset):
        align = 0x10000 if p.type == TYPES["app"] else 0x1000
        if p.offset % align or p.size % 0x1000 or p.size <= 0:
            raise UserError(f"partition table: {p.name} at {p.offset:#x} size {p.size:#x} is not "
                            f"aligned ({align:#x} offset, 0x1000 size)", EXIT_USAGE)
        if p.offset < end:
            raise UserError(f"partition table: {p.name} at {p.offset:#x} overlaps what comes "
                            f"before it (which ends at {end:#x})", EXIT_USAGE)
        end = p.offset + p.size
    if end > FLASH_BYTES:
        raise UserError(f"partition table: it ends at {end:#x}, beyond the {FLASH_BYTES >> 20} MB "
                        "flash", EXIT_USAGE)


def to_binary(parts: list[Partition]) -> bytes:
    """The table as the ESP32 bootloader reads it at 0x8000."""
    body = b"".join(ENTRY.pack(MAGIC, p.type, p.subtype, p.offset, p.size,
                               p.name.encode().ljust(16, b"\0"), p.flags) for p in parts)
    body += MD5_MAGIC + b"\xff" * 14 + hashlib.md5(body).digest()
    if len(body) > TABLE_MAX:
        raise UserError(f"partition table: {len(parts)} partitions do not fit in {TABLE_MAX:#x} "
                        "bytes", EXIT_USAGE)
    return body.ljust(TABLE_MAX, b"\xff")


def from_binary(data: bytes) -> list[Partition]:
    """Entries of a binary table (checked against its MD5); UserError when it is not one."""
    parts: list[Partition] = []
    for at in range(0, len(data) - ENTRY.size + 1, ENTRY.size):
        chunk = data[at:at + ENTRY.size]
        if chunk[:2] == MD5_MAGIC:
            if hashlib.md5(data[:at]).digest() != chunk[16:32]:
                raise UserError("partition table: its MD5 does not match its entries", EXIT_USAGE)
            return parts
        if chunk[:2] != MAGIC:
            break
        _, t, s, off, size, name, flags = ENTRY.unpack(chunk)
        parts.append(Partition(name.rstrip(b"\0").decode(errors="replace"), t, s, off, size, flags))
    raise UserError("not an ESP32 partition table (no MD5 entry after the partitions)", EXIT_USAGE)


def board_table(path: Path = CSV_PATH) -> bytes:
    return to_binary(parse_csv(path.read_text()))
