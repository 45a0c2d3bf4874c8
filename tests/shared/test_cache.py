# mpy-heapsize: 144K
# Offline whitelist cache on both interpreters: build, verify, decide, update, reject.
# (144K: this file is compiled from source in the heap it tests in, and one test brings
# the uplink's protocol and whitelist-sync modules, and builds snapshots in it.)

from offline_cache import fmt
from host_tools import cache_build
from offline_cache.cache import Cache
from host_tools.cache_build import pack_record
from offline_cache.fmt import CacheError
from tests.scratch import fresh_dir

KEY = b"k" * 32
SITE = 7
DAY = 20000  # 2024-10-04, a Friday
NOON = DAY * 86400 + 12 * 3600


def _dir():
    return fresh_dir("cache-test")


def ref(i):
    return b"\x00" * 4 + bytes([(i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255])


SCHED = {1: [(0x1F, 8 * 60, 18 * 60)], 2: [(0x80, 0, 1440)]}


def snap(version, recs, key=KEY, site=SITE, holidays=(DAY + 1,)):
    return cache_build.build(key, fmt.KIND_SNAPSHOT, version, 0, site, 0xFFFF, 0, recs, SCHED, holidays)


def delta(version, base, recs, key=KEY):
    return cache_build.build(key, fmt.KIND_DELTA, version, base, SITE, 0xFFFF, 0, recs, SCHED, [DAY + 1])


def card(i, status=fmt.ACTIVE, master=False, sched=0, start=DAY - 10, end=DAY + 10, groups=0x0003):
    return pack_record(ref(i), status, master, sched, start, end, groups)


def _cache(data):
    d = _dir()
    c = Cache(d, KEY, SITE)
    assert c.error == "no_cache"
    c.apply_bytes(data)
    return c


def _reason(fn):
    try:
        fn()
    except CacheError as e:
        return e.reason
    return None


def test_record_round_trip():
    r = pack_record(b"12345678", fmt.SUSPENDED, True, 30, 1, 65535, 0xA5A5)
    assert len(r) == fmt.REC_SIZE
    ref_, flags, a, b, g = fmt.unpack_record(r)
    assert ref_ == b"12345678" and flags & 3 == fmt.SUSPENDED and flags & 4 and flags >> 3 == 30
    assert (a, b, g) == (1, 65535, 0xA5A5)


def test_schedules_round_trip():
    assert fmt.parse_schedules(cache_build.pack_schedules(SCHED)) == SCHED
    assert fmt.parse_schedules(b"") == {}


def test_hmac_matches_rfc4231_case_2():
    tag = fmt.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert tag == bytes.fromhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_decisions():
    c = _cache(snap(1, [card(1), card(2, fmt.LOST), card(3, fmt.SUSPENDED), card(4, fmt.CANCELLED),
                        card(5, start=DAY + 1), card(6, end=DAY - 1), card(7, sched=1),
                        card(8, master=True), card(9, groups=0x8000)]))
    assert c.version == 1
    assert c.decide(ref(1), 0, NOON) == (True, "granted", False)
    assert c.decide(ref(1), 2, NOON) == (False, "not_permitted", False)
    assert c.decide(ref(99), 0, NOON) == (False, "unknown", False)
    assert c.decide(ref(2), 0, NOON)[1] == "lost"
    assert c.decide(ref(3), 0, NOON)[1] == "suspended"
    assert c.decide(ref(4), 0, NOON)[1] == "cancelled"
    assert c.decide(ref(5), 0, NOON)[1] == "not_yet_valid"
    assert c.decide(ref(6), 0, NOON)[1] == "expired"
    assert c.decide(ref(6), 0, NOON - 86400)[0]  # last valid day is included
    assert c.decide(ref(7), 0, NOON)[0]  # Friday noon in Mon-Fri 08-18
    assert c.decide(ref(7), 0, NOON + 7 * 3600)[1] == "outside_schedule"
    assert c.decide(ref(7), 0, NOON + 86400)[1] == "outside_schedule"  # holiday
    assert c.decide(ref(1), 0, NOON, "lockdown") == (False, "lockdown", False)
    assert c.decide(ref(8), 0, NOON, "lockdown") == (True, "granted", True)
    assert c.decide(ref(9), 15, NOON)[0]
    assert c.decide(ref(1), 0, None)[1] == "clock_unset"
    c.close()


def _spread_ref(i):
    """References over the whole key space, in pairs that share their first 30 bits (they
    differ in the last bits of byte 3 or in the last byte): lookups compare by prefix first."""
    hi = (i // 2) * 2654435761 % (1 << 30)
    return bytes([hi >> 22 & 255, hi >> 14 & 255, hi >> 6 & 255, (hi & 63) << 2 | (i & 1)]) \
        + bytes([0, 0, 0, 7])


def test_cards_sharing_a_reference_prefix_are_told_apart():
    from offline_cache import cache
    saved_index = cache.MAX_INDEX
    cache.MAX_INDEX = 2
    try:
        d = _dir()
        refs = sorted(_spread_ref(i) for i in range(160))
        with open(d + "/in.bin", "wb") as f:
            cache_build.write(f, KEY, fmt.KIND_SNAPSHOT, 3, 0, SITE, 0xFFFF, 0, len(refs),
                      (pack_record(r, fmt.ACTIVE, False, 0, DAY - 10, DAY + 10, 1) for r in refs),
                      SCHED, [])
        c = Cache(d, KEY, SITE)
        c.apply(d + "/in.bin")
    finally:
        cache.MAX_INDEX = saved_index
    for r in refs[::3]:
        assert c.decide(r, 0, NOON) == (True, "granted", False)
        near = r[:7] + bytes([r[7] + 1])  # same 30-bit prefix, not a card
        assert c.decide(near, 0, NOON) == (False, "unknown", False)
        twin = r[:3] + bytes([r[3] ^ 2]) + r[4:]  # same prefix except bit 1 of byte 3
        assert (twin in refs) == (c.lookup(twin) is not None)
    c.close()


def test_many_cards_every_one_found():
    from offline_cache import cache
    saved_index = cache.MAX_INDEX
    cache.MAX_INDEX = 2  # a coarse index: lookups narrow down on flash first
    try:
        d = _dir()
        with open(d + "/in.bin", "wb") as f:
            cache_build.write(f, KEY, fmt.KIND_SNAPSHOT, 3, 0, SITE, 0xFFFF, 0, 500,
                      (card(i * 7 + 3) for i in range(500)), SCHED, [])
        c = Cache(d, KEY, SITE)
        c.apply(d + "/in.bin")
    finally:
        cache.MAX_INDEX = saved_index
    assert c.main.stride == 256
    for i in range(0, 500, 7):
        assert c.decide(ref(i * 7 + 3), 0, NOON)[0]
        assert c.lookup(ref(i * 7 + 4)) is None
    assert c.lookup(ref(0)) is None and c.lookup(b"\xff" * 8) is None
    c.close()


def test_the_firmware_verifies_updates_in_the_caches_own_buffers():
    c = Cache(_dir(), KEY, SITE, reserve_update=True)
    buf, index = c.buf, c.index
    c.apply_bytes(snap(1, [card(i) for i in range(1, 40)]))
    assert c.apply_bytes(delta(2, 1, [card(5, fmt.LOST), card(50)])) == 2
    assert c.overlay.index is not index and c.overlay.buf is buf
    assert c.apply_bytes(delta(3, 2, [card(6, fmt.SUSPENDED), card(51)])) == 3
    for i, want in ((5, "lost"), (6, "suspended"), (50, "granted"), (51, "granted"),
                    (7, "granted"), (60, "unknown")):
        assert c.decide(ref(i), 0, NOON)[1] == want, i
    # A snapshot is indexed into the index it replaces: no second one is held.
    assert c.apply_bytes(snap(4, [card(i) for i in range(100, 140)])) == 4
    assert c.main.index is index and c.main.buf is buf and (c.buf, c.index) == (buf, index)
    assert c.decide(ref(120), 0, NOON)[0] and c.decide(ref(5), 0, NOON)[1] == "unknown"
    c.close()


def test_a_snapshot_refused_after_its_scan_leaves_the_cards_held_deciding():
    c = Cache(_dir(), KEY, SITE, reserve_update=True)
    c.apply_bytes(snap(1, [card(i) for i in range(1, 130)]))
    c.apply_bytes(delta(2, 1, [card(5, fmt.LOST), card(500)]))
    # Its scan ran over the open files' index before the tag said no: they are read again.
    bad = bytearray(snap(3, [card(i) for i in range(1000, 1100)]))
    bad[-1] ^= 1
    assert _reason(lambda: c.apply_bytes(bytes(bad))) == "bad_tag"
    forged = snap(3, [card(i) for i in range(1000, 1100)], key=b"x" * 32)
    assert _reason(lambda: c.apply_bytes(forged)) == "bad_tag"
    assert _reason(lambda: c.apply_bytes(bytes(bad[:-1]))) == "malformed"
    # Refused from its header before any scan: older, another site's.
    assert _reason(lambda: c.apply_bytes(snap(2, [card(1000)]))) == "stale_version"
    assert _reason(lambda: c.apply_bytes(snap(9, [card(1000)], site=SITE + 1))) == "wrong_site"
    assert c.error is None and c.version == 2 and c.index is c.main.index
    for i, want in ((1, "granted"), (100, "granted"), (129, "granted"), (5, "lost"),
                    (500, "granted"), (1050, "unknown"), (130, "unknown")):
        assert c.decide(ref(i), 0, NOON)[1] == want, i
    assert c.apply_bytes(snap(3, [card(i) for i in range(1000, 1100)])) == 3
    assert c.decide(ref(1050), 0, NOON)[0] and c.decide(ref(100), 0, NOON)[1] == "unknown"
    c.close()


def test_delta_revocation_wins_before_merge_and_after():
    c = _cache(snap(1, [card(1), card(2), card(3)]))
    assert c.apply_bytes(delta(2, 1, [card(2, fmt.LOST), pack_record(ref(3), 0, 0, 0, 0, 0, 0, True),
                                      card(4)])) == 2
    assert c.overlay is not None
    assert c.decide(ref(2), 0, NOON)[1] == "lost"
    assert c.decide(ref(3), 0, NOON)[1] == "unknown"
    assert c.decide(ref(4), 0, NOON)[0] and c.decide(ref(1), 0, NOON)[0]
    assert c.apply_bytes(delta(3, 2, [card(2)])) == 3  # unblocked, merged into the overlay
    assert c.decide(ref(2), 0, NOON)[0] and c.decide(ref(3), 0, NOON)[1] == "unknown"
    assert c.maintain()
    assert c.overlay is None and c.version == 3 and c.main.hdr.count == 3
    assert c.decide(ref(2), 0, NOON)[0] and c.decide(ref(3), 0, NOON)[1] == "unknown"
    c.close()
    c2 = Cache(c.dir, KEY, SITE)  # reboot
    assert c2.version == 3 and c2.decide(ref(4), 0, NOON)[0]
    c2.close()


def test_rejections_have_reasons():
    c = _cache(snap(5, [card(1)]))
    assert _reason(lambda: c.apply_bytes(snap(5, [card(2)]))) == "stale_version"
    assert _reason(lambda: c.apply_bytes(snap(4, [card(2)]))) == "stale_version"
    assert _reason(lambda: c.apply_bytes(delta(7, 6, [card(2)]))) == "base_mismatch"
    assert _reason(lambda: c.apply_bytes(snap(6, [card(2)], key=b"x" * 32))) == "bad_tag"
    assert _reason(lambda: c.apply_bytes(snap(6, [card(2)], site=8))) == "wrong_site"
    assert _reason(lambda: c.apply_bytes(b"garbage")) == "malformed"
    good = snap(6, [card(2)])
    assert _reason(lambda: c.apply_bytes(good[:-1])) == "malformed"
    flipped = bytearray(good)
    flipped[40] ^= 1
    assert _reason(lambda: c.apply_bytes(bytes(flipped))) == "bad_tag"
    assert c.version == 5 and c.decide(ref(1), 0, NOON)[0]
    assert c.apply_bytes(good) == 6 and c.decide(ref(2), 0, NOON)[0]
    assert c.decide(ref(1), 0, NOON)[1] == "unknown"
    c.close()


def test_unsorted_signed_file_is_malformed():
    body = bytearray(snap(1, [card(1), card(2)]))
    off = len(body) - 32 - 2 * fmt.REC_SIZE
    a = bytes(body[off:off + 15])
    body[off:off + 15] = body[off + 15:off + 30]
    body[off + 15:off + 30] = a
    body = body[:-32] + fmt.hmac_sha256(KEY, bytes(body[:-32]))
    c = Cache(_dir(), KEY, SITE)
    assert _reason(lambda: c.apply_bytes(bytes(body))) == "malformed"


def test_snapshot_replaces_overlay():
    c = _cache(snap(1, [card(1)]))
    c.apply_bytes(delta(2, 1, [card(2)]))
    c.apply_bytes(snap(3, [card(3)]))
    assert c.overlay is None and c.version == 3
    assert [c.decide(ref(i), 0, NOON)[0] for i in (1, 2, 3)] == [False, False, True]
    c.close()


def test_damaged_overlay_fails_secure_until_a_snapshot():
    c = _cache(snap(1, [card(1), card(2)]))
    c.apply_bytes(delta(2, 1, [card(2, fmt.LOST)]))
    c.close()
    p = c.dir + "/overlay.bin"
    with open(p, "rb") as f:
        data = bytearray(f.read())
    data[-40] ^= 0x10
    with open(p, "wb") as f:
        f.write(data)
    c = Cache(c.dir, KEY, SITE)
    assert c.error == "overlay_damaged"
    assert c.decide(ref(1), 0, NOON) == (False, "no_cache", False)
    assert c.decide(ref(2), 0, NOON)[0] is False
    assert c.apply_bytes(snap(3, [card(1)])) == 3
    assert c.error is None and c.decide(ref(1), 0, NOON)[0]
    c.close()


def _damage(path):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[-40] ^= 0x10
    with open(path, "wb") as f:
        f.write(data)


def test_a_damaged_cache_takes_no_delta_and_no_replayed_older_file():
    # v3 revokes card 1 in the overlay; the overlay is then damaged. Neither a replayed
    # delta on main's version nor a replayed snapshot older than v3 may bring card 1 back.
    c = _cache(snap(1, [card(1), card(2)]))
    d2 = delta(2, 1, [card(2, fmt.LOST)])
    s2 = snap(2, [card(1), card(2)])
    c.apply_bytes(d2)
    c.apply_bytes(delta(3, 2, [card(1, fmt.LOST)]))
    c.close()
    _damage(c.dir + "/overlay.bin")
    c = Cache(c.dir, KEY, SITE)
    assert c.error == "overlay_damaged"
    assert _reason(lambda: c.apply_bytes(delta(4, 1, [card(3)]))) == "base_mismatch"
    assert _reason(lambda: c.apply_bytes(d2)) == "stale_version"
    assert _reason(lambda: c.apply_bytes(s2)) == "stale_version"
    c.close()
    c = Cache(c.dir, KEY, SITE)  # a reboot changes none of it
    assert c.error == "overlay_damaged"
    assert c.decide(ref(1), 0, NOON)[0] is False
    assert c.apply_bytes(snap(4, [card(2)])) == 4  # a newer snapshot repairs it
    assert c.error is None and c.decide(ref(1), 0, NOON)[1] == "unknown"
    c.close()


def test_a_damaged_main_file_takes_no_replayed_older_snapshot():
    c = _cache(snap(5, [card(1, fmt.LOST)]))
    c.close()
    _damage(c.dir + "/main.bin")
    c = Cache(c.dir, KEY, SITE)
    assert c.error == "bad_tag"
    assert _reason(lambda: c.apply_bytes(snap(3, [card(1)]))) == "stale_version"
    assert c.decide(ref(1), 0, NOON)[0] is False
    assert c.apply_bytes(snap(6, [card(1, fmt.LOST)])) == 6
    c.close()


def test_the_idle_merge_leaves_an_update_that_is_arriving_alone():
    from wire.platform import encode_cache_chunk
    from firmware.cache_sync import CacheSync

    c = _cache(snap(1, [card(i) for i in range(40)]))
    c.apply_bytes(delta(2, 1, [card(i, fmt.LOST) for i in range(40, 60)]))
    sync = CacheSync(c)
    update = snap(3, [card(i) for i in range(50)])
    step = 256
    for off in range(0, len(update), step):
        sync.chunk(encode_cache_chunk(3, len(update), off, update[off:off + step], KEY))
        if off == 0:
            assert c.maintain(1)  # the door is idle between two pieces: the overlay is merged
    assert sync.reason == "" and c.version == 3
    assert c.decide(ref(49), 0, NOON)[0] and not c.decide(ref(55), 0, NOON)[0]
    c.close()


def _sync_with(c):
    from firmware.cache_sync import CacheSync

    refused = []
    sync = CacheSync(c)
    sync.on_refused = lambda reason, where: refused.append(reason)
    return sync, refused


def test_an_update_is_judged_by_its_signed_header_before_a_byte_is_written():
    import offline_cache.cache as cm
    from wire.platform import encode_cache_chunk

    c = _cache(snap(2, [card(1)]))
    sync, refused = _sync_with(c)
    incoming = c.incoming_path()

    def first(data, version, key=KEY):
        return sync.chunk(encode_cache_chunk(version, len(data), 0, data[:256], key))

    assert first(snap(1, []), 1) and sync.reason == "stale_version"
    assert first(snap(3, [], site=SITE + 1), 3) and sync.reason == "wrong_site"
    assert first(delta(4, 3, [card(2)]), 4) and sync.reason == "base_mismatch"
    free = cm._free_bytes
    cm._free_bytes = lambda folder: 1000  # a nearly full partition
    try:
        assert first(snap(3, [card(i) for i in range(40)]), 3) and sync.reason == "no_room"
    finally:
        cm._free_bytes = free
    assert cm._size(incoming) < 0  # nothing of any of them was written
    assert not first(snap(3, []), 3, b"x" * 32)  # a piece the platform did not tag: dropped
    assert refused == ["bad_mac"] and cm._size(incoming) < 0
    c.close()


def test_a_transfer_stops_at_the_first_bad_piece():
    import offline_cache.cache as cm
    from wire.platform import encode_cache_chunk

    c = _cache(snap(2, [card(1)]))
    sync, refused = _sync_with(c)
    update = snap(3, [card(i) for i in range(60)])
    step = 256
    for n, off in enumerate(range(0, len(update), step)):
        key = b"x" * 32 if n == 2 else KEY
        sync.chunk(encode_cache_chunk(3, len(update), off, update[off:off + step], key))
        if n == 2:
            assert sync.reason == "bad_chunk" and sync.receiving == 0 and refused == ["bad_mac"]
    assert c.version == 2  # the pieces after the bad one continued nothing
    assert cm._size(c.incoming_path()) == 2 * step  # what came before it, never installed
    c.close()


def test_a_transfer_writes_its_pieces_through_one_open_file():
    # One littlefs file object per transfer, not per piece (252 bytes each on the image, asked
    # of a heap the backlog's drain keeps busy); it is closed before the install reads it, and
    # a piece whose open found no heap is written by reopening for append at the next piece.
    import firmware.cache_sync as cs
    from wire.platform import encode_cache_chunk

    c = _cache(snap(1, [card(1)]))
    sync, refused = _sync_with(c)
    opened = []
    starve = [False]

    class Tracked:  # MicroPython's files have no `closed`
        def __init__(self, f):
            self.f, self.closed = f, False

        def write(self, data):
            return self.f.write(data)

        def close(self):
            self.closed = True
            self.f.close()

    def counting_open(path, mode="r"):
        if starve[0]:
            starve[0] = False
            raise MemoryError("memory allocation failed, allocating 252 bytes")
        f = Tracked(open(path, mode))
        opened.append((mode, f))
        return f

    update = snap(2, [card(i) for i in range(60)])
    step = 256
    cs.open = counting_open
    try:
        for off in range(0, len(update), step):
            if off == 2 * step:  # a reopened file appends where the transfer stands
                sync._close_incoming()
                starve[0] = True
                try:
                    sync.chunk(encode_cache_chunk(2, len(update), off, update[off:off + step], KEY))
                except MemoryError:
                    pass
                assert sync.have == off  # not taken: the platform sends it again
            sync.chunk(encode_cache_chunk(2, len(update), off, update[off:off + step], KEY))
    finally:
        del cs.open
    assert [m for m, _ in opened] == ["wb", "ab"] and all(f.closed for _, f in opened)
    assert sync.reason == "" and c.version == 2 and sync._file is None
    assert c.decide(ref(59), 0, NOON)[0] and not refused
    # A refused transfer closes its file too.
    old = snap(1, [card(i) for i in range(60)])
    sync.chunk(encode_cache_chunk(1, len(old), 0, old[:step], KEY))
    assert sync.reason == "stale_version" and sync._file is None
    c.close()


def test_an_answer_that_found_no_heap_is_published_after_a_collection():
    # The platform sends nothing more of an update until the door's state answers it: an
    # answer lost to a MemoryError left the platform's push without one ("no_answer").
    import asyncio

    from wire.platform import encode_cache_chunk

    c = _cache(snap(1, [card(1)]))
    sync, _refused = _sync_with(c)
    sent = []
    starved = [2]

    async def publish(leaf, payload, retain):
        if starved[0]:
            starved[0] -= 1
            raise MemoryError("memory allocation failed, allocating 124 bytes")
        sent.append(leaf)
        return True

    sync.publish = publish
    update = snap(2, [card(2)])
    asyncio.run(sync.on_message(encode_cache_chunk(2, len(update), 0, update, KEY)))
    assert c.version == 2 and sent == ["cache_state"]
    starved[0] = 3  # and one that finds none three times raises, for the uplink to count
    update = snap(3, [card(3)])
    try:
        asyncio.run(sync.on_message(encode_cache_chunk(3, len(update), 0, update, KEY)))
    except MemoryError:
        pass
    else:
        raise AssertionError("an answer that could not be made was taken as sent")
    assert sent == ["cache_state"] and c.version == 3
    c.close()


class _ClosingFails:
    """An incoming file whose close (it writes the last data out) fails: a full flash."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        return self.f.write(data)

    def close(self):
        self.f.close()
        raise OSError(28)


def test_a_transfer_started_again_closes_its_file_before_the_offer_is_judged():
    # The offer removes the old incoming file; one still open kept its flash blocks in use on
    # littlefs, and a transfer started again from 0 was refused no_room.
    from wire.platform import encode_cache_chunk

    c = _cache(snap(1, [card(1)]))
    sync, _refused = _sync_with(c)
    update = snap(2, [card(i) for i in range(60)])
    step = 256
    for off in (0, step):
        sync.chunk(encode_cache_chunk(2, len(update), off, update[off:off + step], KEY))
    assert sync._file is not None
    judged = []
    offer = c.check_offer

    def check_offer(head, total, tick=None):
        judged.append(sync._file is None)
        return offer(head, total, tick)

    c.check_offer = check_offer
    for off in range(0, len(update), step):
        sync.chunk(encode_cache_chunk(2, len(update), off, update[off:off + step], KEY))
    assert judged == [True] and sync.reason == "" and c.version == 2
    c.close()


def test_an_incoming_file_that_cannot_be_written_out_is_refused_as_storage():
    import firmware.cache_sync as cs
    from wire.platform import encode_cache_chunk

    c = _cache(snap(1, [card(1)]))
    sync, _refused = _sync_with(c)
    update = snap(2, [card(i) for i in range(60)])
    cs.open = lambda path, mode="r": _ClosingFails(open(path, mode))
    try:
        for off in range(0, len(update), 256):
            sync.chunk(encode_cache_chunk(2, len(update), off, update[off:off + 256], KEY))
    finally:
        del cs.open
    assert sync.reason == "storage" and c.version == 1 and sync._file is None
    c.close()
