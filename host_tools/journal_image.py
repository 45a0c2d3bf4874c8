"""Reads a door's journal partition from a flash image file, without booting the firmware:
which sequence numbers it still holds (the torture run judges a door's delivery by them).
The format is the shared journal_format (docs/journal.md); nothing is written, so a live
door's image can be read in place."""

from __future__ import annotations

from pathlib import Path

from journal_format import ACK_BLOCKS, RECORD_SIZE, header, record


def bounds(image: Path, block_size: int = 4096) -> tuple[int, int]:
    """(oldest, newest) sequence number on the flash, acknowledged or not: the lowest first
    number of a valid sector header, and the last record of the head (the sector with the
    highest sector sequence). (1, 0) when the journal holds nothing, as the firmware's
    Journal has it (oldest_seq(), next_seq - 1)."""
    data = image.read_bytes()
    sectors: list[tuple[int, int, int]] = []  # (sector sequence, first record, block)
    for block in range(ACK_BLOCKS, len(data) // block_size):
        slot = data[block * block_size:block * block_size + RECORD_SIZE]
        found = header(slot, memoryview(slot))
        if found is not None:
            sectors.append((found[0], found[1], block))
    if not sectors:
        return 1, 0
    _, first, head = max(sectors)
    newest = first - 1
    base = head * block_size
    for s in range(1, block_size // RECORD_SIZE):
        slot = data[base + s * RECORD_SIZE:base + (s + 1) * RECORD_SIZE]
        rec = record(slot, memoryview(slot))
        if rec is None:
            break  # erased: the head's records end here
        if rec:  # a torn slot holds no number
            newest = rec[0]
    return min(f for _, f, _ in sectors), newest
