"""The door's offline whitelist cache: verified sorted file + verified overlay of pending changes.

  c = Cache(dir, key)                 # at boot: recovers, verifies, builds the RAM index
  c.decide(ref, door, now, mode)      # -> (granted, reason, master)
  c.apply(path)                       # a received snapshot/delta file on flash; CacheError(reason)
  c.maintain()                        # at idle: merge the overlay into the sorted file

Files in `dir`: main.bin (snapshot), overlay.bin (delta on top of main, consulted first),
floor (the highest version ever installed, so a replayed older file is refused even when
main.bin or overlay.bin is damaged), plus temporaries. Every replacement is
write-then-rename, so a power cut leaves old or new."""
import gc
import os
import sys

from offline_cache.fmt import (
    ACTIVE,
    BAD_TAG,
    BASE_MISMATCH,
    DELETE,
    HDR_SIZE,
    HMAC,
    KIND_DELTA,
    KIND_SNAPSHOT,
    MALFORMED,
    NO_END,
    REC_SIZE,
    REF_LEN,
    STALE,
    STATUS_NAMES,
    TAG_SIZE,
    WRONG_SITE,
    CacheError,
    Header,
    check_flags,
    local_parts,
    parse_header,
    parse_schedules,
    tags_equal,
    unpack_record,
)
from offline_cache.native import guess
from offline_cache.native import upper as _upper

# A collection where the door places long-lived objects; host tools (CPython) skip it.
_collect = gc.collect if sys.implementation.name == "micropython" else (lambda: None)

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_BUF_RECS = const(32)  # records per flash read (480 bytes, preallocated)
# The lookup's constants folded into its bytecode (a module global costs ~200 instructions a
# load on a Cortex-M3, docs/mcu.md); equal to fmt.REF_LEN, fmt.REC_SIZE and _BUF_RECS.
_REF = const(8)
_REC = const(15)
_BUF = const(32)
_KEY = const(4)  # bytes of a reference kept per RAM index entry
_MERGE_RECS = const(10)  # records per merge piece: its output and two cursors share the buffer
# RAM index entries whatever the number of cards: 200 of 4 bytes, 800 bytes made once at boot.
# A 100k whitelist then has one entry every 512 records (196 of them); the lookup's
# interpolated read of 32 records still finds most cards in one read (+-16 around the guess
# finds 92 % of random references at a 512-record stride, 79 % at 1,024). An entry is the first
# 4 bytes of its record's reference, not all 8: the same lookup in half the heap (0.8 KiB kept
# for good, the 64 KiB goal); references are keyed hashes, so two entries share 4 bytes about
# once in 2^32 / 200^2 whitelists, and the lookup stays exact when they do (Table.find).
# From 51,201 to 65,536 cards one entry every 512 records instead of 256 (and from 102,401 to
# 131,072 every 1,024 instead of 512: twice the stride wherever n/256 <= stride < n/200).
MAX_INDEX = 200

_MAIN = const("main.bin")
_OVERLAY = const("overlay.bin")
_INCOMING = const("incoming.bin")
_MERGE_TMP = const("merge.tmp")
_OVERLAY_TMP = const("overlay.tmp")
_FLOOR = const("floor")
_FLOOR_TMP = const("floor.tmp")

# Decision reasons.
_GRANTED = const("granted")
_UNKNOWN = const("unknown")
_EXPIRED = const("expired")
_NOT_YET_VALID = const("not_yet_valid")
_OUTSIDE_SCHEDULE = const("outside_schedule")
_NOT_PERMITTED = const("not_permitted")
_LOCKDOWN = const("lockdown")
_NO_CACHE = const("no_cache")
# The files could not be opened (heap, flash, an exception from the door's tick): the cache
# refuses every card, as when damaged, until they are opened again (maintain() at idle, the
# next snapshot, the next boot). Never main.bin alone: the overlay may hold revocations.
OPEN_FAILED = "open_failed"
_CLOCK_UNSET = const("clock_unset")

_STORAGE = const("storage")  # update refused: flash full or failing
_NO_ROOM = const("no_room")  # update refused before it was written: it cannot fit the free flash
_FREE_MARGIN = const(8192)  # bytes left free beside an update (littlefs metadata, the floor file)

_MODE_NORMAL = const("normal")
_MODE_LOCKDOWN = const("lockdown")


_DAY_2020 = const(18262)  # 2020-01-01, days since 1970
_SECS_2020 = const(_DAY_2020 * 86400)


def _day(now, tz_min):
    """local_parts(now, tz_min)[0], counted from 2020: epoch seconds leave a 32-bit port's small
    ints (2**30) in 2004, and each operation on a big int costs ~800 instructions there."""
    if now >= _SECS_2020:
        return _DAY_2020 + (now - _SECS_2020 + tz_min * 60) // 86400
    return (now + tz_min * 60) // 86400


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _free_bytes(folder):
    """Free bytes on the filesystem holding `folder` (None: the port cannot say)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return (st[1] or st[0]) * st[4]  # fragment (or block) size x blocks free to us


class Table:
    """One verified cache file, looked up by binary search: RAM index + reads into `buf`.

    `index`: a buffer for the RAM index, used when it is large enough (its first
    `self.entries` 4-byte reference prefixes are the index); else the scan allocates one."""

    def __init__(self, path, key, buf, site=None, tick=None, index=None):
        self.path = path
        self.buf = buf
        self.mv = memoryview(buf)  # made once: a read slices it
        self.index = index
        size = _size(path)
        if size < 0:
            raise CacheError(MALFORMED, "missing " + path)
        f = open(path, "rb")
        try:
            self._scan(f, key, size, tick)
        except Exception:
            f.close()
            raise
        if site is not None and self.hdr.site != site:
            f.close()
            raise CacheError(WRONG_SITE, "cache for site %d" % self.hdr.site)
        self.f = f

    def _scan(self, f, key, size, tick=None):
        """Read the whole file once: check the tag and the record order, build the index.
        `tick()` is called between pieces, so the door keeps being served during a long scan."""
        raw = f.read(HDR_SIZE)
        hdr = parse_header(raw, size)
        mac = HMAC(key)
        mac.update(raw)
        extra = f.read(hdr.sched_len + 2 * hdr.hol_count)
        mac.update(extra)
        self.schedules = parse_schedules(extra[:hdr.sched_len])
        self.holidays = extra[hdr.sched_len:]
        n = hdr.count
        stride = _BUF_RECS
        while (n + stride - 1) // stride > MAX_INDEX:
            stride *= 2
        self.stride = stride
        entries = (n + stride - 1) // stride
        index = self.index
        if index is None or len(index) < entries * _KEY:
            index = bytearray(_KEY * entries)
        # An index entry keeps 4 bytes of a reference: those after the first bytes every
        # reference of the file shares (the first and last one's common prefix, at most 4
        # bytes: none for keyed hashes, several for small numbers as references).
        skip = 0
        if n > 1:
            off = hdr.records_offset()
            f.seek(off + (n - 1) * REC_SIZE)
            last = f.read(REF_LEN)
            f.seek(off)
        buf = self.buf
        whole = memoryview(buf)[:_BUF_RECS * REC_SIZE]  # one view for every full piece
        prev = None
        i = 0
        bad = None
        while i < n:
            k = min(_BUF_RECS, n - i)
            piece = whole if k == _BUF_RECS else whole[:k * REC_SIZE]
            if f.readinto(piece) != k * REC_SIZE:
                raise CacheError(MALFORMED, "short read")
            mac.update(piece)
            if tick is not None:
                tick()
            for j in range(k):
                o = j * REC_SIZE
                ref = buf[o:o + REF_LEN]
                if bad is None and ((prev is not None and ref <= prev)
                                    or not check_flags(buf[o + REF_LEN], hdr.kind)):
                    bad = "records not sorted, duplicated or with bad flags"
                if (i + j) % stride == 0:
                    if i + j == 0 and n > 1:
                        while skip < REF_LEN - _KEY and skip < len(last) and buf[skip] == last[skip]:
                            skip += 1
                        self.common = bytes(buf[0:skip])
                    p = ((i + j) // stride) * _KEY
                    index[p:p + _KEY] = buf[o + skip:o + skip + _KEY]
                prev = ref
            i += k
        tag = f.read(TAG_SIZE)
        if not tags_equal(mac.digest(), tag):
            raise CacheError(BAD_TAG, "tag does not match")
        if bad:
            raise CacheError(MALFORMED, bad)
        self.hdr = hdr
        self.index = index
        self.entries = entries
        self.skip = skip
        self.off = hdr.records_offset()

    def moved(self, path):
        """The (closed) file was renamed to `path`: read it there, no new scan needed."""
        self.path = path
        self.f = open(path, "rb")

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None

    def _read(self, first, k):
        f = self.f
        f.seek(self.off + first * _REC)
        f.readinto(self.mv[:k * _REC])

    def find(self, ref):
        """Offset in self.buf of the record of `ref` (after this call), or -1."""
        n = self.hdr.count
        idx = self.index
        native = _upper
        r = ref  # compared with the index entries: ref without the bytes all references share
        if self.skip:
            if ref[:self.skip] != self.common:
                return -1
            r = ref[self.skip:]
        if native is not None:  # machine code: the same answers as the bytecode below
            u = native(idx, self.entries, _KEY, r)
            first = u >> 16
            u &= 0xFFFF
        else:
            key = r[:_KEY]
            lo, hi = 0, self.entries
            while lo < hi:  # entries <= key, and whether the last of them equals it
                mid = (lo + hi) >> 1
                o = mid * _KEY
                if idx[o:o + _KEY] <= key:
                    lo = mid + 1
                else:
                    hi = mid
            u = lo << 1
            first = 0
            if lo and idx[(lo - 1) * _KEY:lo * _KEY] == key:
                u |= 1
                first = lo - 1
                a = 0
                while a < first:  # the first entry equal to key (runs can be long)
                    m = (a + first) >> 1
                    if idx[m * _KEY:(m + 1) * _KEY] < key:
                        a = m + 1
                    else:
                        first = m
        hi = u >> 1  # entries whose first bytes are <= ref's: the record of entry `hi` is > ref
        if hi == 0:
            return -1
        lo = hi - 1
        stride = self.stride
        if u & 1:
            # Entry `lo` has ref's first bytes: most likely its own card (a keyed hash shares
            # 4 bytes with another card's about once in 2^32 / n), read first. But its record
            # may be above ref, and entries before it may share those bytes too: the answer is
            # after the last entry below them (the file's start when none is), before entry `hi`.
            mid = lo * stride
            start = (first - 1) * stride if first else 0  # `first`: the first entry equal
            end = min(n, hi * stride)
        else:
            start = lo * stride
            end = min(n, start + stride)
            mid = None
            if native is not None and hi < self.entries:
                # Card references are keyed hashes, spread evenly: where `ref` falls between
                # this index entry and the next says where its record is. One read of the 32
                # records around that place (the whole read buffer; +-16 finds 92 % of random
                # references in a 512-record stride) usually ends the search: a littlefs read
                # at a new place costs ~7,500 instructions on a Cortex-M3, mostly the walk of
                # the file's block list, ~1,000 more per 128 bytes.
                mid = start + guess(idx, lo, r, end - start) - (_BUF >> 1)
        buf = self.buf
        if native is not None and mid is not None and end - start > _BUF:
            # When the window read at `mid` does not end the search, what it showed narrows
            # the range as a search step would.
            if mid < start:
                mid = start
            elif mid > end - _BUF:
                mid = end - _BUF
            self._read(mid, _BUF)
            u = native(buf, _BUF, _REC, ref)
            hi = u >> 1  # records of the window <= ref
            if hi == 0:
                end = mid
            elif hi < _BUF or mid + _BUF == end:
                return (hi - 1) * _REC if u & 1 else -1
            else:
                start = mid + _BUF - 1
        while end - start > _BUF:  # narrow on flash: answer in [start, end)
            mid = (start + end) >> 1
            self._read(mid, 1)
            if buf[0:_REF] <= ref:
                start = mid
            else:
                end = mid
        self._read(start, end - start)
        if native is not None:
            u = native(buf, end - start, _REC, ref)
            return ((u >> 1) - 1) * _REC if u & 1 else -1
        lo, hi = 0, end - start
        while lo < hi:
            mid = (lo + hi) >> 1
            o = mid * _REC
            k = buf[o:o + _REF]
            if k == ref:
                return o
            if k < ref:
                lo = mid + 1
            else:
                hi = mid
        return -1


class Cache:
    def __init__(self, folder, key, site=None, reserve_update=False):
        self.dir = folder
        self.key = bytes(key)
        self.site = site
        # Allocated once, at boot while the heap is still whole, and reused: the read buffer,
        # shared by the sorted file and the overlay (a lookup reads one after the other),
        # and the sorted file's RAM index at its largest (800 bytes: a door must be able to take
        # a 100k snapshot at any time), rebuilt in place at every open (boot, merge) and by
        # a snapshot arriving while no sorted file is open. Allocating the index anew after
        # a merge asked a heap the merge had fragmented for a piece slightly larger (3 KiB
        # for 100k cards) than the one just freed.
        self.buf = bytearray(_BUF_RECS * REC_SIZE)
        self.index = bytearray(MAX_INDEX * _KEY)
        # With `reserve_update` (the firmware), an update is verified in these same buffers:
        # the scan runs start to end in one call (the door's inputs and relay are served from
        # `tick`, no card is decided meanwhile), so the read buffer is free, and a snapshot is
        # indexed straight into the index it replaces (a refused one is refused before the scan
        # when its header says so, else the open files are reopened after). Nothing is asked of
        # a busy door's heap for it (a 100k snapshot's 3 KiB index asked at that moment was the
        # first thing to fail), and no second pair is held (5 KiB). A delta's index is its own,
        # at its size. Without (a tool, a test), the buffers are made per update.
        self.in_place = reserve_update
        self.main = None
        self.overlay = None
        self.error = None  # reason the cache could not be opened (decisions then deny no_cache)
        for name in (_INCOMING, _MERGE_TMP, _OVERLAY_TMP, _FLOOR_TMP):  # left by a power cut
            _remove(self._p(name))
        self.floor = self._read_floor()
        self._open()

    def _p(self, name):
        return self.dir + "/" + name

    def _read_floor(self):
        try:
            with open(self._p(_FLOOR)) as f:
                return int(f.read())
        except (OSError, ValueError):
            return 0

    def _raise_floor(self, version):
        """Remember `version` as the highest installed (after it is in place: a cut before
        this leaves the floor one install behind, never ahead of the files). The install
        stands without it: no heap or flash for the floor's file leaves it one install
        behind, as a cut would (the open files hold the version). Raised out of an install,
        it had the install's clean-up close the file just put in place while the cache
        went on deciding from it (the card task then stopped the firmware)."""
        if version <= self.floor:
            return
        try:
            with open(self._p(_FLOOR_TMP), "w") as f:
                f.write("%d" % version)
            os.rename(self._p(_FLOOR_TMP), self._p(_FLOOR))
        except (MemoryError, OSError):
            return
        self.floor = version

    def _open(self, tick=None):
        """(Re)open the files in place; `tick()` is called between pieces of their scans (the
        door is served while main.bin is read again). A transfer's incoming file is left
        alone: the idle merge reopens the cache while an update may be arriving.

        Fails secure: `error` is set until both files are open, so whatever stops this (no
        heap for the overlay's index, a flash or tick error, even Ctrl-C) leaves decisions
        refused, never made from main.bin without the overlay's revocations."""
        self.close()
        # The open tables (files, an overlay's index) live until the next merge or update:
        # made after a collection, they take the lowest holes, not places past the update's
        # garbage, where they would hold the door's later work apart.
        _collect()
        self.error = OPEN_FAILED
        if _size(self._p(_MAIN)) < 0:
            self.error = _NO_CACHE
            return
        try:
            self.main = Table(self._p(_MAIN), self.key, self.buf, self.site, tick, self.index)
            self.error = self._open_overlay(tick)
        except CacheError as e:
            self.error = e.reason
            self.main = None
        except Exception:  # noqa: BLE001 - heap, flash, tick: nothing open, error stays set
            self.close()

    def _open_overlay(self, tick):
        """Open overlay.bin, if any, beside the open main.bin: None, or why the cache refuses."""
        if _size(self._p(_OVERLAY)) < 0:
            return None
        try:
            ov = Table(self._p(_OVERLAY), self.key, self.buf, self.site, tick)
        except CacheError:
            # Only a merge or a snapshot replaces main.bin; both leave no overlay they do not
            # cover. A torn overlay cannot exist (it is renamed in complete), so this is damage.
            return "overlay_damaged"
        if ov.hdr.version <= self.main.hdr.version:
            ov.close()  # already merged (cut between the merge's rename and this removal)
            _remove(self._p(_OVERLAY))
        elif ov.hdr.base != self.main.hdr.version:
            ov.close()
            return "overlay_damaged"
        else:
            self.overlay = ov
        return None

    def close(self):
        for t in (self.main, self.overlay):
            if t is not None:
                t.close()
        self.main = None
        self.overlay = None

    @property
    def version(self):
        if self.overlay is not None:
            return self.overlay.hdr.version
        return self.main.hdr.version if self.main is not None else 0

    def _top(self):
        return self.overlay if self.overlay is not None else self.main

    # -- lookups and decisions ---------------------------------------------------------------

    def _locate(self, ref):
        """(table, offset in its buffer) of a card's record, overlay first (it wins), or
        (None, -1). A deleting overlay record is returned as it is."""
        ref = bytes(ref)
        o = -1
        t = self.overlay
        if t is not None:
            o = t.find(ref)
        if o < 0:
            t = self.main
            o = t.find(ref) if t is not None else -1
        return (t, o) if o >= 0 else (None, -1)

    def lookup(self, ref):
        """(ref, flags, start, end, groups) of a card, or None (overlay first: it wins)."""
        t, o = self._locate(ref)
        if t is None:
            return None
        rec = unpack_record(t.buf, o)
        return None if rec[1] == DELETE else rec

    def _in_schedule(self, sid, now, tz):
        ivs = self._top().schedules.get(sid)
        if not ivs:
            return False
        day, wd, minute = local_parts(now, tz)
        hol = self._top().holidays
        lo, hi = 0, len(hol) // 2
        holiday = False
        while lo < hi:
            mid = (lo + hi) // 2
            d = (hol[2 * mid] << 8) | hol[2 * mid + 1]
            if d == day:
                holiday = True
                break
            if d < day:
                lo = mid + 1
            else:
                hi = mid
        bit = 0x80 if holiday else (1 << wd)
        for days, a, b in ivs:
            if days & bit and a <= minute < b:
                return True
        return False

    def decide(self, ref, door, now, mode=_MODE_NORMAL):
        """(granted, reason, master). Revocations win over every other rule, master included."""
        if self.main is None or self.error:
            return False, _NO_CACHE, False  # fail secure: a damaged overlay may hold revocations
        t, o = self._locate(ref)
        if t is None:
            return False, _UNKNOWN, False
        buf = t.buf  # the record's fields read in place (unpack_record costs ~4,600 instructions)
        flags = buf[o + REF_LEN]
        if flags == DELETE:
            return False, _UNKNOWN, False
        start = (buf[o + 9] << 8) | buf[o + 10]
        end = (buf[o + 11] << 8) | buf[o + 12]
        groups = (buf[o + 13] << 8) | buf[o + 14]
        master = bool(flags & 4)
        status = flags & 3
        if status != ACTIVE:
            return False, STATUS_NAMES[status], master
        if now is None:
            return False, _CLOCK_UNSET, master
        tz = self._top().hdr.tz_min
        day = _day(now, tz)
        if day < start:
            return False, _NOT_YET_VALID, master
        if end != NO_END and day > end:
            return False, _EXPIRED, master
        if mode == _MODE_LOCKDOWN and not master:
            return False, _LOCKDOWN, master
        if door < 0 or door > 15 or not (groups >> door) & 1:
            return False, _NOT_PERMITTED, master
        sid = flags >> 3
        if sid and not self._in_schedule(sid, now, tz):
            return False, _OUTSIDE_SCHEDULE, master
        return True, _GRANTED, master

    # -- updates -----------------------------------------------------------------------------

    def incoming_path(self):
        """Where the uplink writes a received update before calling apply()."""
        return self._p(_INCOMING)

    def apply_bytes(self, data):
        with open(self._p(_INCOMING), "wb") as f:
            f.write(data)
        return self.apply(self._p(_INCOMING))

    def check_offer(self, head, total, tick=None):
        """Before a byte of an update is written: its header (the first HDR_SIZE bytes, already
        authenticated by the transport) must be for this site, newer than what the door holds,
        on the right base for a delta, and the file must fit the free flash. Raises
        CacheError(reason) as apply() would, or no_room.

        Files a short heap left closed (`open_failed`: whole on the flash) are opened again
        first (`tick` between the pieces of their scan): refused as a damaged cache, a delta
        made the platform send the whole snapshot to a door already short of heap. Still
        closed, the offer raises MemoryError, as a piece that found no heap does."""
        hdr = parse_header(head, total)
        if self.site is not None and hdr.site != self.site:
            raise CacheError(WRONG_SITE, "cache for site %d" % hdr.site)
        if self.error == OPEN_FAILED:
            self._open(tick)
            if self.error == OPEN_FAILED:
                raise MemoryError("the whitelist's files could not be opened again")
        have = max(self.version, self.floor)
        if hdr.version <= have:
            raise CacheError(STALE, "version %d, have %d" % (hdr.version, have))
        if hdr.kind != KIND_SNAPSHOT and (self.main is None or self.error is not None
                                          or hdr.base != self.version):
            raise CacheError(BASE_MISMATCH, "base %d, have %d" % (hdr.base, self.version))
        _remove(self._p(_INCOMING))  # an earlier transfer's piece: its room counts as free
        free = _free_bytes(self.dir)
        if free is not None and total + _FREE_MARGIN > free:
            raise CacheError(_NO_ROOM, "%d bytes, %d free" % (total, free))
        return hdr

    def apply(self, path, tick=None):
        """Verify and install a snapshot or delta file; returns the new version.

        Raises CacheError(reason): bad_tag, malformed, wrong_site, stale_version (older or
        equal: replay/rollback), base_mismatch (delta on another version: ask for a snapshot).
        Flash errors (full, I/O) give CacheError("storage") with the cache as it was.
        The file is consumed (renamed into place or removed)."""
        # Without `in_place`: the scan has buffers of its own (decisions may come in between),
        # except the cache's index and read buffer when no sorted file uses them.
        index = self.index if self.main is None else None
        buf = self.buf if self.in_place or self.main is None else bytearray(len(self.buf))
        reopen = False
        if self.in_place and self.main is not None:
            hdr = self._peek(path)
            if hdr.kind == KIND_SNAPSHOT:
                index, reopen = self.index, True  # the open files' index is rebuilt on refusal
        try:
            t = Table(path, self.key, buf, self.site, tick, index)
        except BaseException:  # any: a scan in place has overwritten the open file's index
            _remove(path)
            if reopen:
                self._open(tick)
            raise
        try:
            return self._install(t, path, tick)
        except BaseException as e:
            # The open files are read again when the scan used their index or they were being
            # swapped (`error` says so); else (heap, flash, tick before that) they are intact.
            if not isinstance(e, CacheError):
                t.close()
                _remove(path)
                _remove(self._p(_OVERLAY_TMP))
            if reopen or self.error == OPEN_FAILED:
                self._open(tick)
            if isinstance(e, OSError):
                raise CacheError(_STORAGE, "flash: %s" % e) from None
            raise

    def _peek(self, path):
        """The header of an update file, refused (and the file removed) for what apply()
        would refuse it for after its scan: another site, not newer than what is held."""
        try:
            size = _size(path)
            with open(path, "rb") as f:
                hdr = parse_header(f.read(HDR_SIZE), size)
            if self.site is not None and hdr.site != self.site:
                raise CacheError(WRONG_SITE, "cache for site %d" % hdr.site)
            have = max(self.version, self.floor)
            if hdr.version <= have:
                raise CacheError(STALE, "version %d, have %d" % (hdr.version, have))
        except (CacheError, OSError) as e:
            _remove(path)
            if isinstance(e, CacheError):
                raise
            raise CacheError(MALFORMED, "missing " + path) from None
        return hdr

    def _install(self, t, path, tick=None):
        hdr = t.hdr
        have = max(self.version, self.floor)  # the floor still holds when a file is damaged
        if hdr.version <= have:
            t.close()
            _remove(path)
            raise CacheError(STALE, "version %d, have %d" % (hdr.version, have))
        if hdr.kind == KIND_SNAPSHOT:
            self.error = OPEN_FAILED  # until the new file is open in place
            t.close()
            self.close()
            os.rename(path, self._p(_MAIN))
            _remove(self._p(_OVERLAY))
            t.moved(self._p(_MAIN))
            t.buf, t.mv = self.buf, memoryview(self.buf)
            if t.index is not self.index:  # the scan's index: copied into the open file's
                self.index[:len(t.index)] = t.index
                t.index = self.index
            self.main = t
            self.error = None
            self._raise_floor(hdr.version)
            return self.version
        if self.main is None or self.error is not None or hdr.base != self.version:
            # A damaged cache takes a snapshot only: a delta on what is left of it could bring
            # back cards the damaged part had revoked.
            t.close()
            _remove(path)
            raise CacheError(BASE_MISMATCH, "delta on %d, have %d%s" % (
                hdr.base, self.version, " (damaged: %s)" % self.error if self.error else ""))
        if self.overlay is None:
            self.error = OPEN_FAILED  # until the overlay is open: main.bin alone misses it
            t.close()
            os.rename(path, self._p(_OVERLAY))
            t.moved(self._p(_OVERLAY))
            t.buf, t.mv = self.buf, memoryview(self.buf)
            self.overlay = t
            self.error = None
            self._raise_floor(hdr.version)
            return self.version
        # The merge reads the overlay and the update, not main.bin, and no card is decided
        # during it: main.bin's file object is freed before the output's is made, so a
        # fragmented heap need not find a fourth one. `error` refuses decisions until both
        # are open again (a failure on the way: apply() reopens the files).
        self.error = OPEN_FAILED
        self.main.close()
        try:
            self._merge(self.overlay, t, self._p(_OVERLAY_TMP), KIND_DELTA, self.main.hdr.version,
                        True, tick)
        except BaseException:
            # The files are as they were: main.bin is opened again where it is, its index
            # intact, not read again (1,563 pieces at 100k cards, asked of the heap the merge
            # just failed on). A failure here leaves `error` set: apply() reads both again.
            self.main.moved(self.main.path)
            self.error = None
            raise
        t.close()
        self.overlay.close()
        self.overlay = None
        os.rename(self._p(_OVERLAY_TMP), self._p(_OVERLAY))
        _remove(path)
        self.main.moved(self.main.path)
        self.error = self._open_overlay(tick)
        if self.error:  # refused as damaged: decisions stay refused
            raise CacheError(self.error, "merged overlay refused")
        self._raise_floor(hdr.version)
        return self.version

    def maintain(self, min_overlay=0, tick=None):
        """Merge the overlay into the sorted file when it holds at least `min_overlay` records;
        `tick()` is called between pieces (the door is served during a long merge). Files
        that could not be opened (OPEN_FAILED) are opened again instead."""
        if self.error == OPEN_FAILED:
            self._open(tick)
            return False
        ov = self.overlay
        if ov is None or ov.hdr.count < min_overlay:
            return False
        try:
            self._merge(self.main, ov, self._p(_MERGE_TMP), KIND_SNAPSHOT, 0, False, tick)
            self.close()
            self.error = OPEN_FAILED  # until the merged file is open
            os.rename(self._p(_MERGE_TMP), self._p(_MAIN))
        except BaseException as e:  # before the rename: the old files are as they were
            _remove(self._p(_MERGE_TMP))
            if self.error == OPEN_FAILED:
                self._open(tick)
            if isinstance(e, OSError):
                raise CacheError(_STORAGE, "flash: %s" % e) from None
            raise
        _remove(self._p(_OVERLAY))
        self._open(tick)
        return True

    def _merge(self, old, new, out_path, kind, base, keep_deletes, tick=None):
        """Write old+new (new wins) sorted into out_path, signed; header/schedules from new.
        Its pieces are read and written through the cache's read buffer, free during this
        one call (the door's tick decides no card): a merge asks a fragmented heap for no
        buffer."""
        h = new.hdr
        a_n, b_n = old.hdr.count, new.hdr.count
        mv = memoryview(self.buf)
        # The output's file object (252 bytes on littlefs) first: made after the count's
        # cursors and records, it found the holes they had split (main.bin's among them, freed
        # for an overlay merge) too small, in a fragmented heap.
        with open(out_path, "wb") as f:
            # First pass: count the output records.
            count = 0
            for _ref, flags in _merged(old, new, a_n, b_n, mv):
                if keep_deletes or flags != DELETE:
                    count += 1
            out = Header(kind, h.version, base, h.site, h.scope, h.tz_min, count, h.sched_len,
                         h.hol_count, h.created)
            mac = HMAC(self.key)
            raw = out.pack()
            mac.update(raw)
            f.write(raw)
            new.f.seek(HDR_SIZE)
            extra = new.f.read(h.sched_len + 2 * h.hol_count)
            mac.update(extra)
            f.write(extra)
            obuf = mv[:_PIECE]
            k = 0
            for rec in _merged_records(old, new, a_n, b_n, mv):
                if not keep_deletes and rec[REF_LEN] == DELETE:
                    continue
                obuf[k * REC_SIZE:(k + 1) * REC_SIZE] = rec
                k += 1
                if k == _MERGE_RECS:
                    mac.update(obuf)
                    f.write(obuf)
                    k = 0
                    if tick is not None:
                        tick()
            if k:
                mac.update(obuf[:k * REC_SIZE])
                f.write(obuf[:k * REC_SIZE])
            f.write(mac.digest())


_PIECE = REC_SIZE * _MERGE_RECS  # a merge piece's bytes (3 x 150 of the buffer's 480)


def _cursor(t, n, mv):
    """Records of a table in order, read _MERGE_RECS at a time into `mv` (_PIECE bytes)."""
    i = 0
    while i < n:
        k = min(_MERGE_RECS, n - i)
        t.f.seek(t.off + i * REC_SIZE)
        t.f.readinto(mv[:k * REC_SIZE])
        for j in range(k):
            yield bytes(mv[j * REC_SIZE:(j + 1) * REC_SIZE])
        i += k


def _merged_records(old, new, a_n, b_n, mv):
    a = _cursor(old, a_n, mv[_PIECE:2 * _PIECE])
    b = _cursor(new, b_n, mv[2 * _PIECE:3 * _PIECE])
    ra = next(a, None)
    rb = next(b, None)
    while ra is not None or rb is not None:
        if rb is None or (ra is not None and ra[:REF_LEN] < rb[:REF_LEN]):
            yield ra
            ra = next(a, None)
        else:
            if ra is not None and ra[:REF_LEN] == rb[:REF_LEN]:
                ra = next(a, None)
            yield rb
            rb = next(b, None)


def _merged(old, new, a_n, b_n, mv):
    for rec in _merged_records(old, new, a_n, b_n, mv):
        yield rec[:REF_LEN], rec[REF_LEN]
