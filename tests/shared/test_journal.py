# mpy-heapsize: 96K
# The event journal on a simulated NOR partition: runs under CPython and MicroPython.
# (96K: this file is compiled from source in the same heap as the flash images it makes.)
import os
import struct

from board.vdev.flashsim import FlashSim, PowerCut
from firmware.journal import Journal, JournalError
from journal_format import (FLAGS_MASK, R_BOOT, R_CODE, R_FLAGS, R_PAYLOAD, R_SEQ, R_TIME, RECORD_SIZE,
                            payload_of)
from wire.codes import GAP as CODE_GAP
from tests.scratch import scratch_dir


def _scratch(name):
    base = scratch_dir()
    path = base + "/" + name
    try:
        os.remove(path)
    except OSError:
        pass
    return path


def _dev(blocks=8, block_size=1024):
    return FlashSim(path=None, block_size=block_size, block_count=blocks)


def _payload(i):
    return struct.pack("<III", i, i * 7, i ^ 0x5A5A)


def _fill(j, n, start=0):
    seqs = []
    for i in range(start, start + n):
        seqs.append(j.append(1, 0, 3, 1000 + i, i % 1000, i & 0xFFFF, _payload(i)))
    return seqs


def test_append_assigns_consecutive_sequence_numbers_and_reads_back():
    j = Journal(_dev())
    seqs = _fill(j, 50)
    assert seqs == list(range(1, 51))
    recs = j.read(1, 100)
    assert [r[R_SEQ] for r in recs] == seqs
    assert recs[10][R_PAYLOAD] == _payload(10)
    assert recs[10][R_TIME] == 1010 and recs[10][R_BOOT] == 3
    assert [r[R_SEQ] for r in j.read(40, 5)] == [40, 41, 42, 43, 44]


def test_reopen_continues_sequence_and_keeps_acks():
    dev = _dev()
    j = Journal(dev)
    _fill(j, 30)
    j.ack(12)
    j2 = Journal(dev)
    assert j2.next_seq == 31
    assert j2.acked == 12
    assert j2.depth() == 18
    assert j2.append(2, 0, 0, 0, 0, 0) == 31
    assert [r[R_SEQ] for r in j2.read(13, 100)] == list(range(13, 32))


def test_ack_is_bounded_by_what_was_written_and_never_goes_back():
    j = Journal(_dev())
    _fill(j, 5)
    assert j.ack(99) is True
    assert j.acked == 5
    assert j.ack(3) is False
    assert j.acked == 5


def test_many_acks_wrap_the_ack_area():
    dev = _dev(blocks=6, block_size=256)
    j = Journal(dev)
    for k in range(1, 200):
        j.append(1, 0, 0, 0, 0, 0)
        j.ack(k)
    assert Journal(dev).acked == 199


def test_flash_cost_per_record_is_one_program_of_the_record():
    dev = FlashSim(path=_scratch("journal-cost.img"), block_size=4096, block_count=16)
    j = Journal(dev)
    j.append(1, 0, 0, 0, 0, 0)  # first sector opened (erase + header)
    j.maintain()
    before_p, before_e = dev.bytes_programmed, dev.blocks_erased
    _fill(j, 100)
    assert dev.bytes_programmed - before_p == 100 * RECORD_SIZE
    assert dev.blocks_erased == before_e


def test_maintain_erases_ahead_so_crossing_a_sector_erases_nothing():
    dev = _dev(blocks=6, block_size=256)  # 7 records per sector
    j = Journal(dev)
    _fill(j, 7)
    j.ack(7)
    assert j.maintain() is True
    erased = dev.blocks_erased
    _fill(j, 1)
    assert dev.blocks_erased == erased


def test_full_ring_overwrites_oldest_and_reports_the_gap():
    dev = _dev(blocks=6, block_size=256)  # 4 data sectors x 7 records, capacity 21
    j = Journal(dev)
    assert j.capacity == 21
    _fill(j, 40)
    assert j.lost > 0
    recs = j.read(1, 1000)
    gaps = [r for r in recs if r[R_CODE] == CODE_GAP]
    assert gaps, "overwriting unacknowledged records must leave a GAP record"
    lost = 0
    for g in gaps:
        first, last = struct.unpack("<II", g[R_PAYLOAD][:8])
        assert 1 <= first <= last
        lost += last - first + 1
    assert lost == j.lost
    # Every sequence number is either readable or inside a reported gap.
    seen = set(r[R_SEQ] for r in recs)
    for g in gaps:
        first, last = struct.unpack("<II", g[R_PAYLOAD][:8])
        for s in range(first, last + 1):
            seen.add(s)
    assert seen == set(range(1, j.next_seq))


def test_near_full_threshold():
    j = Journal(_dev(blocks=6, block_size=256), near_full_ratio=0.5)
    _fill(j, 9)
    assert not j.near_full()
    _fill(j, 2)
    assert j.near_full()
    j.ack(11)
    assert not j.near_full()


def _workload(j, n):
    done = []
    for i in range(n):
        done.append(j.append(1, 0, 0, i, 0, 0, _payload(i)))
        if i % 5 == 4:
            j.ack(done[-1] - 2)
        if i % 7 == 6:
            j.maintain()
    return done


def test_power_cut_at_every_operation_loses_no_completed_append():
    n = 24
    probe = _dev(blocks=6, block_size=256)
    _workload(Journal(probe), n)
    total_ops = probe.ops
    assert total_ops > n
    for cut in range(total_ops):
        path = _scratch("journal-cut.img")
        dev = FlashSim(path=path, block_size=256, block_count=6)
        j = Journal(dev)
        done = []
        acked = 0
        dev.cut_after(cut + 1)
        try:
            for i in range(n):
                done.append(j.append(1, 0, 0, i, 0, 0, _payload(i)))
                if i % 5 == 4:
                    j.ack(done[-1] - 2)
                    acked = done[-1] - 2
                if i % 7 == 6:
                    j.maintain()
        except PowerCut:
            pass
        dev.close()
        dev = FlashSim(path=path, block_size=256, block_count=6)
        j2 = Journal(dev)
        assert j2.acked >= acked, (cut, j2.acked, acked)
        assert j2.next_seq >= len(done) + 1, (cut, j2.next_seq, len(done))
        got = [r[R_SEQ] for r in j2.read(j2.acked + 1, 1000)]
        want = [s for s in done if s > j2.acked]
        assert got[: len(want)] == want, (cut, got, want)
        for r in j2.read(j2.acked + 1, 1000):
            if r[R_SEQ] in want:
                assert r[R_PAYLOAD] == _payload(r[R_TIME])
        # The journal keeps working after the cut.
        s = j2.append(9, 0, 0, 0, 0, 0)
        assert j2.read(s, 1)[0][R_CODE] == 9
        dev.close()


def test_a_payload_ending_in_zero_bytes_reads_back_whole():
    # A card reference may end in 0x00: its padding must not be taken for it (nor the
    # reverse), whatever the length.
    j = Journal(_dev())
    payloads = [b"", b"\x00", b"\x01\x00", b"\xab" * 7 + b"\x00", b"\x00" * 12, b"\x07" * 12]
    for p in payloads:
        j.append(1, 0x05, 3, 1000, 0, 0, p)
    recs = j.read(1, 10)
    assert [payload_of(r) for r in recs] == payloads
    assert [r[R_FLAGS] & FLAGS_MASK for r in recs] == [0x05] * len(payloads)


def test_a_record_without_a_length_reads_with_its_padding_trimmed():
    rec = [1, 1, 0x01, 3, 1000, 0, 0, b"\x01\x02\x00" + b"\x00" * 9]
    assert payload_of(rec) == b"\x01\x02"


def test_a_payload_longer_than_a_record_holds_is_refused():
    j = Journal(_dev())
    try:
        j.append(1, 0, 3, 1000, 0, 0, b"\x01" * 13)
        refused = False
    except JournalError:
        refused = True
    assert refused and j.next_seq == 1



def _reboot(dev, path, block_size, blocks):
    """Power comes back: the same flash image, a new journal over it."""
    dev.close()
    dev = FlashSim(path=path, block_size=block_size, block_count=blocks)
    return dev, Journal(dev)


def _cut_during(dev, fn, *args):
    """Call fn(*args) with the power going at its first flash write."""
    dev.cut_after(1)
    try:
        fn(*args)
    except PowerCut:
        pass


def _accounted(j):
    """Sequence numbers below next_seq that are neither readable nor named by a readable GAP
    record nor acknowledged: events lost without a word."""
    recs = j.read(j.acked + 1, 100000)
    seen = set(r[R_SEQ] for r in recs)
    for r in recs:
        if r[R_CODE] == CODE_GAP:
            first, last = struct.unpack("<II", payload_of(r))
            for s in range(first, last + 1):
                seen.add(s)
    return [s for s in range(j.acked + 1, j.next_seq) if s not in seen]


def test_a_torn_acknowledgement_entry_is_skipped_and_acks_go_on_being_saved():
    path = _scratch("journal-ack-torn.img")
    dev = FlashSim(path=path, block_size=1024, block_count=8)
    j = Journal(dev)
    _fill(j, 40)
    j.ack(10)
    _cut_during(dev, j.ack, 20)  # the power goes while the next entry is being programmed
    dev, j = _reboot(dev, path, 1024, 8)
    assert j.acked == 10
    assert j.ack(25) and j.ack(30)
    dev, j = _reboot(dev, path, 1024, 8)
    assert j.acked == 30
    dev.close()


def test_a_torn_record_does_not_make_live_records_count_as_lost():
    # A slot torn by a power cut holds no number; the sector then holds one record fewer
    # than it has slots. Going round the ring must not take the next sector's first
    # records for this one's, report them lost and skip them.
    path = _scratch("journal-rec-torn.img")
    dev = FlashSim(path=path, block_size=1024, block_count=8)
    j = Journal(dev)
    _fill(j, 4)
    _cut_during(dev, j.append, 1, 0, 0, 0, 0, 0)
    dev, j = _reboot(dev, path, 1024, 8)
    while j.head != j.n_data - 1 or j.slot <= j.per_sector:
        j.append(1, 0, 0, 0, 0, 0)
    sector0 = [r[R_SEQ] for r in j.read(1, j.per_sector) if r[R_SEQ] < j._first_seq[1]]
    j.ack(sector0[-1])  # the platform has everything in the first sector, no more
    j.maintain()
    j.append(1, 0, 0, 0, 0, 0)
    assert j.lost == 0 and j.acked == sector0[-1]
    assert [r for r in j.read(1, 100000) if r[R_CODE] == CODE_GAP] == []
    assert j.read(sector0[-1] + 1, 1)[0][R_SEQ] == sector0[-1] + 1
    dev.close()


def test_a_power_cut_while_the_full_ring_overwrites_never_loses_records_silently():
    # Offline, the ring fills and its oldest sector is overwritten: erase, header, GAP
    # record, acknowledgement entry. A cut at any of them, then the door going on.
    blocks, bs = 6, 256
    probe = _dev(blocks=blocks, block_size=bs)
    pj = Journal(probe)
    _fill(pj, pj.capacity + pj.per_sector)  # full, then one sector overwritten
    before = probe.ops
    _fill(pj, 1)  # the append that overwrites the next sector
    ops_in_overwrite = probe.ops - before
    assert ops_in_overwrite >= 3
    for cut in range(1, ops_in_overwrite + 1):
        path = _scratch("journal-full-cut.img")
        dev = FlashSim(path=path, block_size=bs, block_count=blocks)
        j = Journal(dev)
        _fill(j, j.capacity + j.per_sector)
        dev.cut_after(cut)
        try:
            _fill(j, 1)
        except PowerCut:
            pass
        dev, j = _reboot(dev, path, bs, blocks)
        assert _accounted(j) == [], cut
        _fill(j, 2 * j.per_sector)
        assert _accounted(j) == [], cut
        dev, j = _reboot(dev, path, bs, blocks)
        assert _accounted(j) == [], cut
        gaps = [r for r in j.read(j.acked + 1, 100000) if r[R_CODE] == CODE_GAP]
        for g in gaps:  # a gap is reported once, and everything below it is settled
            assert struct.unpack("<II", payload_of(g))[1] <= j.acked, cut
        ranges = [struct.unpack("<II", payload_of(g)) for g in gaps]
        assert len(ranges) == len(set(ranges)), (cut, ranges)
        dev.close()


def test_erased_record_literal_matches_the_record_size():
    # Written out as a literal (frozen into the image): it must stay one record of 0xFF.
    import journal_format as fmt
    assert fmt.ERASED32 == b"\xff" * fmt.RECORD_SIZE
    assert fmt.ERASED_ACK == b"\xff" * fmt.ACK_SIZE


def test_where_each_sector_ends_is_read_from_the_one_table_right_after_laps_and_torn_erases():
    # The journal keeps only each sector's first number: the next sector's first - 1 is where
    # a sector ends when that sector was opened right after it (docs/journal.md, "Boot").
    # Checked against the records on the flash as the ring goes round, with the erase that
    # opens the next sector cut before it changed a byte, part-way, and just before its end.
    bs, blocks = 256, 6
    for landed in (0, 40, bs - 1):
        path = _scratch("journal-ends.img")
        dev = FlashSim(path=path, block_size=bs, block_count=blocks)
        j = Journal(dev)
        sent = []
        for lap in range(3):
            while j.head < 0 or j.slot <= j.per_sector:  # fill the head sector
                sent.append(j.append(1, 0, 0, lap, 0, 0))
                j.ack(sent[-1] - 5)
            dev.cut_after(1, landed)  # the next append erases the next sector first
            try:
                sent.append(j.append(1, 0, 0, lap, 0, 0))
            except PowerCut:
                pass
            dev, j = _reboot(dev, path, bs, blocks)
            for i in range(j.n_data):
                if j._first_seq[i]:
                    assert j._sector_last_seq(i) == j._read_sector(i)[0], (landed, lap, i)
            got = [r[R_SEQ] for r in j.read(j.acked + 1, 1000)]
            assert got == [s for s in sent if s > j.acked], (landed, lap, got)
            for _ in range(j.per_sector + 2):  # on into the next sector
                sent.append(j.append(1, 0, 0, lap, 0, 0))
            for i in range(j.n_data):
                if j._first_seq[i]:
                    assert j._sector_last_seq(i) == j._read_sector(i)[0], (landed, lap, i)
        dev.close()
