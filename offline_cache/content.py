"""The whitelist's content hash (docs/cache-format.md, "Content hash"): what a door decides
from, whatever file it came in, so the door and the platform compute the same value for the
same cards and two different files of one version are told apart. A merge re-signs the file
on the door, so the hash is over the records, not the file's bytes. The records enter as a
sum of per-record terms: a delta changes it by its own records only (no pass over 100,000
cards), and main file and overlay may split the cards any way.

Shared by the door (firmware: `Tracker`, beside the cache) and the host (`of_snapshot`, the
platform's side): MicroPython code. offline_cache/cache.py does not import it, so a cache
alone costs no more heap than before."""
import hashlib
import struct

from offline_cache.fmt import (
    DELETE,
    HDR_SIZE,
    KIND_SNAPSHOT,
    MALFORMED,
    REC_SIZE,
    REF_LEN,
    TAG_SIZE,
    CacheError,
)

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

_MASK = const(0xFFFFFFFFFFFFFFFF)
_RECORD = const("digest")  # in the cache folder: main.bin's tag (8 bytes, hex), live count and sum
_PIECE = const(16)  # records per read of a pass over a file (240 bytes, one buffer per pass)


def term(rec):
    """A live record's term in the sum: the first 8 bytes of SHA-256(record), big-endian."""
    return int.from_bytes(hashlib.sha256(rec).digest()[:8], "big")


def meta(site, tz_min, sched_len, hol_count, extra):
    """What decides besides the records: site, time offset, schedules and holidays (`extra`:
    the file's schedule section and holidays, as they are in it)."""
    h = hashlib.sha256(struct.pack(">IhHH", site, tz_min, sched_len, hol_count))
    h.update(extra)
    return h.digest()


def digest(meta_digest, live, total):
    """16 hex digits from the meta digest, the count of live records and their term sum."""
    h = hashlib.sha256(b"DWLC-content/1" + meta_digest + struct.pack(">I", live)
                       + (total & _MASK).to_bytes(8, "big"))
    return "".join("%02x" % b for b in h.digest()[:8])


def of_snapshot(data):
    """The content hash of a whole snapshot file (bytes; the host's side, tag unchecked)."""
    from offline_cache.fmt import parse_header

    hdr = parse_header(data[:HDR_SIZE], len(data))
    if hdr.kind != KIND_SNAPSHOT:
        raise CacheError(MALFORMED, "a content hash is of a snapshot")
    off = hdr.records_offset()
    total = 0
    for i in range(hdr.count):
        total += term(data[off + i * REC_SIZE:off + (i + 1) * REC_SIZE])
    return digest(meta(hdr.site, hdr.tz_min, hdr.sched_len, hdr.hol_count, data[HDR_SIZE:off]),
                  hdr.count, total)


# -- the door's side ---------------------------------------------------------------------------


def _meta_of(t):
    """The meta digest of an open cache table (offline_cache.cache.Table), read from its file."""
    h = t.hdr
    t.f.seek(HDR_SIZE)
    return meta(h.site, h.tz_min, h.sched_len, h.hol_count, t.f.read(h.sched_len + 2 * h.hol_count))


def _tag_of(t):
    """The first 8 bytes of a table's file tag, in hex: names the file."""
    t.f.seek(t.off + t.hdr.count * REC_SIZE)
    return "".join("%02x" % b for b in t.f.read(TAG_SIZE)[:8])


def _sum(t, tick=None):
    """(live, total) of a table's records, in one pass through a private 240-byte buffer."""
    buf = bytearray(_PIECE * REC_SIZE)
    mv = memoryview(buf)
    n = t.hdr.count
    live = total = 0
    i = 0
    while i < n:
        k = min(_PIECE, n - i)
        t.f.seek(t.off + i * REC_SIZE)
        t.f.readinto(mv[:k * REC_SIZE])
        for j in range(k):
            o = j * REC_SIZE
            if buf[o + REF_LEN] != DELETE:
                live += 1
                total = (total + term(mv[o:o + REC_SIZE])) & _MASK
        i += k
        if tick is not None:
            tick()
    return live, total


class Tracker:
    """The content hash of what a door's cache decides from (`value`, None when it decides
    from nothing). `update()` after the cache opened at boot, after an install and after a
    merge. main.bin's sum is recorded in the cache folder with the file's tag, so a boot
    does not hash 100,000 records again (a record naming another file is not believed); a
    merge keeps the content, so its new main.bin takes the sum the view had; a snapshot is
    hashed in one pass. The overlay is added with one lookup per record it holds."""

    def __init__(self, cache, tick=None):
        self.cache = cache
        self.tick = tick  # called between pieces of a pass: the door keeps being served
        self.value = None
        self._main = None  # (tag, live, total) of main.bin
        self._view = None  # (version, live, total) of the last value

    def _main_sum(self, main):
        tag = _tag_of(main)
        if self._main is not None and self._main[0] == tag:
            return self._main
        view = self._view
        if view is not None and view[0] == main.hdr.version and self.cache.overlay is None:
            got = (tag, view[1], view[2])  # merged: the content the view had
        else:
            got = self._recorded(tag)
            if got is None:
                got = (tag,) + _sum(main, self.tick)
        if got != self._recorded(tag):
            self._record(got)
        self._main = got
        return got

    def _path(self, name):
        return self.cache.dir + "/" + name

    def _recorded(self, tag):
        try:
            with open(self._path(_RECORD)) as f:
                p = f.read().split()
            if p[0] == tag:
                return tag, int(p[1]), int(p[2])
        except (OSError, ValueError, IndexError):
            pass
        return None

    def _record(self, got):
        """Temp file + rename, after the file it describes: lost in a cut, it costs the next
        boot one pass, nothing else."""
        import os

        try:
            with open(self._path(_RECORD + ".tmp"), "w") as f:
                f.write("%s %d %d" % got)
            os.rename(self._path(_RECORD + ".tmp"), self._path(_RECORD))
        except OSError:
            pass

    def update(self):
        c = self.cache
        self.value = self._view = None
        if c.main is None or c.error:
            return None
        _, live, total = self._main_sum(c.main)
        ov = c.overlay
        top = c.main
        if ov is not None:
            top = ov
            m = c.main
            buf = bytearray(REC_SIZE)
            for i in range(ov.hdr.count):
                ov.f.seek(ov.off + i * REC_SIZE)
                ov.f.readinto(buf)
                o = m.find(bytes(buf[:REF_LEN]))
                if o >= 0:
                    live -= 1
                    total -= term(m.mv[o:o + REC_SIZE])
                if buf[REF_LEN] != DELETE:
                    live += 1
                    total += term(buf)
            total &= _MASK
        self._view = (top.hdr.version, live, total)
        self.value = digest(_meta_of(top), live, total)
        return self.value
