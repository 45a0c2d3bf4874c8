"""Power-safe event journal on a raw NOR-flash partition.

Why not a littlefs file: appending a small record to a file and syncing it makes littlefs
copy its tail block and commit metadata each time (about 80x write amplification, and an
erase per record). Here every record is programmed exactly once into erased flash: an append
costs one program of RECORD_SIZE bytes, and one erase per sector's worth of records (done
ahead of time by `maintain()` when the device is idle).

Layout of the partition (erase blocks of `block_size` bytes; the formats are in
journal_format, shared with the host tools that read a journal image; docs/journal.md):

- blocks 0 and 1: the acknowledgement area, a ping-pong log of 8-byte entries
  (acknowledged-up-to sequence number, CRC); the newest valid entry wins.
- blocks 2..n-1: a ring of data sectors. Slot 0 of a sector is its header (magic, sector
  sequence, first record sequence, CRC); slots 1.. hold 32-byte records with a CRC each.

A power cut can tear at most the record, header or ack entry being programmed; its CRC fails
and it is skipped, never mistaken for data. Records are deleted only by erasing sectors whose
records are all acknowledged by the platform. When the ring is full, the oldest unacknowledged
sector is overwritten and a GAP record names the lost sequence numbers: loss is never silent.
"""

import struct

from journal_format import (ACK, ACK_BLOCKS, ACK_SIZE, ERASED_ACK, FLAGS_MASK, HDR, LEN_SHIFT, MAGIC,
                            REC, RECORD_SIZE, crc, header, record)
from wire.codes import GAP as CODE_GAP  # arg unused; payload: first lost seq (u32), last lost seq (u32)


class JournalError(Exception):
    pass


class Journal:
    """Append-only, acknowledged, power-safe event log on a block device partition.

    `dev` speaks the littlefs extended block protocol (readblocks/writeblocks with offset,
    ioctl 4/5/6): the flash simulator on the virtual board, `esp32.Partition` on the ESP32.
    """

    def __init__(self, dev, near_full_ratio=0.9):
        self.dev = dev
        self.block_size = dev.ioctl(5, 0)
        self.n_blocks = dev.ioctl(4, 0)
        if self.n_blocks < ACK_BLOCKS + 3:
            raise JournalError("partition too small")
        self.per_sector = self.block_size // RECORD_SIZE - 1
        self.n_data = self.n_blocks - ACK_BLOCKS
        # One sector is always kept erased (or about to be) ahead of the head.
        self.capacity = (self.n_data - 1) * self.per_sector
        self.near_full_at = int(self.capacity * near_full_ratio)
        self._buf = bytearray(RECORD_SIZE)
        self._mv = memoryview(self._buf)
        self._abuf = bytearray(ACK_SIZE)
        # Per data sector, the sequence number its header gives its first record (at least 1);
        # 0: no valid header (erased, or torn). One table: sectors are written in ring order,
        # so the one after a sector followed it when its first number is higher
        # (_sector_last_seq); only the head's own header sequence is kept beside it.
        self._first_seq = [0] * self.n_data
        self._head_sseq = 0
        self._pre_erased = -1  # data index erased in this boot and not yet used
        self.head = -1  # data index of the sector being filled
        self.slot = 0  # next free slot in the head sector (1-based; 0 = header)
        self.next_seq = 1
        self.acked = 0
        self._ack_block = 0
        self._ack_slot = 0
        self.lost = 0  # records overwritten before acknowledgement, over the life of the flash
        self.appends = 0
        self._scan()

    # -- boot -------------------------------------------------------------------------

    def _read(self, block, offset, mv):
        self.dev.readblocks(block, mv, offset)

    def _valid_header(self, block):
        self._read(block, 0, self._mv)
        return header(self._buf, self._mv)

    def _record_at(self, block, slot):
        """Decode the record in `slot`: a tuple, None if erased, False if torn/corrupt."""
        self._read(block, slot * RECORD_SIZE, self._mv)
        return record(self._buf, self._mv)

    def _scan(self):
        best = -1
        best_sseq = 0
        for i in range(self.n_data):
            h = self._valid_header(ACK_BLOCKS + i)
            if h is None:
                continue
            self._first_seq[i] = h[1]
            if best < 0 or h[0] > best_sseq:
                best, best_sseq = i, h[0]
        self._scan_acks()
        if best < 0:
            return
        self.head = best
        self._head_sseq = best_sseq
        last_seq, self.slot, gap = self._read_sector(best)
        self.next_seq = last_seq + 1
        if self.acked >= self.next_seq:
            self.acked = self.next_seq - 1
        # Every unacknowledged record is on the flash, unless a power cut came between
        # erasing the oldest unacknowledged sector (ring full) and reporting it: then the
        # oldest sector starts above the acknowledged point, and the hole is reported now.
        oldest = min(f for f in self._first_seq if f)
        if oldest > self.acked + 1:
            first, last = self.acked + 1, oldest - 1
            noted = gap is not None and gap[0] <= first and gap[1] >= last
            self._report_lost(first, last, noted)

    def _read_sector(self, i):
        """(last sequence number, next free slot, range the last GAP record names or None)
        of data sector `i`, read up to its first erased slot. A torn slot is skipped, never
        reprogrammed: the next free slot is after it."""
        block = ACK_BLOCKS + i
        last_seq = self._first_seq[i] - 1
        slot = 1
        gap = None
        for s in range(1, self.per_sector + 1):
            rec = self._record_at(block, s)
            if rec is None:
                break
            slot = s + 1
            if rec:
                last_seq = rec[0]
                if rec[1] == CODE_GAP:
                    gap = struct.unpack("<II", rec[7][:8])
        return last_seq, slot, gap

    def _scan_acks(self):
        best = -1
        mv = memoryview(self._abuf)
        for b in range(ACK_BLOCKS):
            for s in range(self.block_size // ACK_SIZE):
                self._read(b, s * ACK_SIZE, mv)
                if self._abuf == ERASED_ACK:
                    break
                seq, c = struct.unpack(ACK, self._abuf)
                if c == crc(mv[:4]) and seq > best:
                    best = seq
                    self._ack_block, self._ack_slot = b, s + 1
        if best >= 0:
            self.acked = best
            # Continue after the block's last programmed entry: one torn by a power cut
            # after the newest valid entry is skipped, never programmed over.
            self._ack_slot = self._first_free_ack(self._ack_block)
        else:
            self._ack_block, self._ack_slot = 0, self._first_free_ack(0)

    def _first_free_ack(self, b):
        mv = memoryview(self._abuf)
        for s in range(self.block_size // ACK_SIZE):
            self._read(b, s * ACK_SIZE, mv)
            if self._abuf == ERASED_ACK:
                return s
        return self.block_size // ACK_SIZE

    # -- append -------------------------------------------------------------------------

    def depth(self):
        """Records not yet acknowledged by the platform."""
        return self.next_seq - 1 - self.acked

    def near_full(self):
        return self.depth() >= self.near_full_at

    def append(self, code, flags, boot, time, ms, arg, payload=b""):
        """Program one record; returns its sequence number. No allocation beyond the call."""
        if self.head < 0 or self.slot > self.per_sector:
            self._open_sector()
        seq = self.next_seq
        if len(payload) > 12:
            raise JournalError("payload longer than 12 bytes")
        flags = (flags & FLAGS_MASK) | (len(payload) << LEN_SHIFT)
        struct.pack_into(REC, self._buf, 0, seq, code, flags, boot, time, ms, arg, payload, 0)
        struct.pack_into("<I", self._buf, 28, crc(self._mv[:28]))
        self.dev.writeblocks(ACK_BLOCKS + self.head, self._mv, self.slot * RECORD_SIZE)
        self.slot += 1
        self.next_seq = seq + 1
        self.appends += 1
        return seq

    def _sector_last_seq(self, i):
        """Highest sequence number sector `i` holds: one less than the first of the sector
        written after it. (Its first + slots - 1 would overstate it: a slot torn by a power
        cut holds no number, and the next record takes the number it would have had.)
        Sectors are opened in ring order, so the next one was opened right after this one
        when its first number is higher: had the ring come round again since, this sector
        would have been opened again first. A next sector that is erased, torn (an erase or
        header cut short: no valid header) or left from the lap before (an erase cut before
        it changed a byte: a lower first number) is no successor."""
        if i == self.head:
            return self.next_seq - 1
        j = (i + 1) % self.n_data
        if self._first_seq[j] > self._first_seq[i]:
            return self._first_seq[j] - 1
        return self._read_sector(i)[0]  # no successor (a cut while opening it): look

    def _open_sector(self):
        nxt = 0 if self.head < 0 else (self.head + 1) % self.n_data
        lost_first = lost_last = 0
        if self._first_seq[nxt] and self._sector_last_seq(nxt) > self.acked:
            # Ring full: the oldest unacknowledged records are overwritten, and reported.
            lost_first = max(self._first_seq[nxt], self.acked + 1)
            lost_last = min(self._sector_last_seq(nxt), self.next_seq - 1)
        if self._pre_erased != nxt:
            self.dev.ioctl(6, ACK_BLOCKS + nxt)
        self._pre_erased = -1
        sseq = (self._head_sseq + 1) if self.head >= 0 else 1
        struct.pack_into(HDR, self._buf, 0, MAGIC, sseq, self.next_seq, b"", 0)
        struct.pack_into("<I", self._buf, 28, crc(self._mv[:28]))
        self.dev.writeblocks(ACK_BLOCKS + nxt, self._mv, 0)
        self._first_seq[nxt] = self.next_seq
        self._head_sseq = sseq
        self.head = nxt
        self.slot = 1
        if lost_last >= lost_first and lost_first:
            self._report_lost(lost_first, lost_last)

    def _report_lost(self, first, last, noted=False):
        """Records first..last are gone unacknowledged: a GAP record says so (unless one
        already does: `noted`), then an acknowledgement entry moves past them, so nothing
        below the gap is owed and a reboot does not find the hole again. A cut between the
        erase that lost them and this is found at the next boot (`_scan`)."""
        self.lost += last - first + 1
        if not noted:
            self.append(CODE_GAP, 0, 0, 0, 0, 0, struct.pack("<II", first, last))
        if self.acked < last:
            self._write_ack(last)

    def maintain(self):
        """Idle-time work: erase the next sector ahead of need, if it holds nothing unsent.

        Returns True when it erased a block (so callers can yield between erases).
        """
        if self.head < 0:
            return False
        nxt = (self.head + 1) % self.n_data
        if self._pre_erased == nxt:
            return False
        if self._first_seq[nxt] and self._sector_last_seq(nxt) > self.acked:
            return False
        self.dev.ioctl(6, ACK_BLOCKS + nxt)
        self._first_seq[nxt] = 0
        self._pre_erased = nxt
        return True

    # -- acknowledgements and reading ----------------------------------------------------

    def ack(self, upto_seq):
        """Record that the platform durably stored every record up to `upto_seq`."""
        upto_seq = min(upto_seq, self.next_seq - 1)
        if upto_seq <= self.acked:
            return False
        self._write_ack(upto_seq)
        return True

    def _write_ack(self, upto_seq):
        per_block = self.block_size // ACK_SIZE
        if self._ack_slot >= per_block:
            self._ack_block = (self._ack_block + 1) % ACK_BLOCKS
            self.dev.ioctl(6, self._ack_block)
            self._ack_slot = 0
        struct.pack_into("<I", self._abuf, 0, upto_seq)
        mv = memoryview(self._abuf)
        struct.pack_into("<I", self._abuf, 4, crc(mv[:4]))
        self.dev.writeblocks(self._ack_block, mv, self._ack_slot * ACK_SIZE)
        self._ack_slot += 1
        self.acked = upto_seq

    def oldest_seq(self):
        """The lowest sequence number still on the flash (acknowledged or not); next_seq
        when the journal holds nothing. Below it, records are gone: erased once acknowledged,
        or overwritten and reported lost."""
        oldest = self.next_seq
        for i in range(self.n_data):
            if self._first_seq[i] and self._first_seq[i] < oldest:
                oldest = self._first_seq[i]
        return oldest

    def _sector_of(self, seq):
        """Index of the sector holding `seq` (or the oldest one after it), -1 if none."""
        best = oldest = -1
        for i in range(self.n_data):
            f = self._first_seq[i]
            if not f:
                continue
            if f <= seq and (best < 0 or f > self._first_seq[best]):
                best = i
            if oldest < 0 or f < self._first_seq[oldest]:
                oldest = i
        return best if best >= 0 else oldest

    def _next_sector(self, i):
        first = self._first_seq[i]
        best = -1
        for j in range(self.n_data):
            f = self._first_seq[j]
            if f > first and (best < 0 or f < self._first_seq[best]):
                best = j
        return best

    def read(self, from_seq, max_records):
        """Record tuples with seq >= from_seq, in order, at most `max_records` (torn ones
        skipped); see the R_* positions."""
        return list(self.records(from_seq, max_records))

    def records(self, from_seq, max_records):
        """read(), one record at a time: a reader that is done with each before the next
        (the uplink's sender) holds one record's objects, not a list of them. Nothing may
        be appended while it runs (no await between two records)."""
        n = 0
        i = self._sector_of(from_seq)
        while i >= 0 and n < max_records:
            block = ACK_BLOCKS + i
            # A torn slot only ever pushes records later, so the record for from_seq is at
            # this slot or after it.
            s = 1 + from_seq - self._first_seq[i]
            if s < 1:
                s = 1
            while s <= self.per_sector and n < max_records:
                rec = self._record_at(block, s)
                s += 1
                if rec is None:
                    break
                if rec and rec[0] >= from_seq:
                    n += 1
                    yield rec
            i = self._next_sector(i)
