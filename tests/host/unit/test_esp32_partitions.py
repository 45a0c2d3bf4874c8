"""The ESP32 reference board's partition table: fits the flash, no overlaps, aligned, and a
journal partition as large as the virtual board's (same event capacity on both)."""

from __future__ import annotations

import re

from host_tools.paths import REPO_ROOT

FLASH_SIZE = 16 * 1024 * 1024
SECTOR = 4096


def _table() -> dict[str, tuple[str, str, int, int]]:
    rows: dict[str, tuple[str, str, int, int]] = {}
    for line in (REPO_ROOT / "board" / "esp32_partitions.csv").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, kind, sub, offset, size = (f.strip() for f in line.split(","))
        rows[name] = (kind, sub, int(offset, 0), int(size, 0))
    return rows


def test_partitions_fit_the_flash_without_overlap() -> None:
    rows = _table()
    spans = sorted((off, off + size, name) for name, (_, _, off, size) in rows.items())
    for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"{a} overlaps {b}"
    assert spans[-1][1] <= FLASH_SIZE
    for name, (kind, _, off, size) in rows.items():
        if name not in ("nvs", "phy_init"):
            assert off % SECTOR == 0 and size % SECTOR == 0, name
        if kind == "app":
            assert off % 0x10000 == 0, name


def test_the_board_finds_what_it_looks_for() -> None:
    rows = _table()
    source = (REPO_ROOT / "board" / "esp32_ref.py").read_text()
    for label in ("vfs", "journal"):
        assert f'label="{label}"' in source
        assert rows[label][0] == "data"
    assert rows["factory"][0] == "app"


def test_journal_holds_as_many_events_as_the_virtual_board() -> None:
    virtual = (REPO_ROOT / "board" / "virtual.py").read_text()
    match = re.search(r"^JOURNAL_BLOCKS = (\d+)", virtual, re.M)
    assert match
    assert _table()["journal"][3] == int(match.group(1)) * SECTOR


def test_two_rom_partitions_as_large_as_the_virtual_boards() -> None:
    virtual = (REPO_ROOT / "board" / "virtual.py").read_text()
    match = re.search(r"^ROM_BLOCKS = (\d+)", virtual, re.M)
    assert match
    rows = _table()
    for label in ("romfs", "romfs2"):
        kind, sub, _, size = rows[label]
        assert (kind, sub) == ("data", "0x8f")
        assert size == int(match.group(1)) * SECTOR
