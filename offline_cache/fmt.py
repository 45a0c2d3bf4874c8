"""Offline whitelist cache: byte format, HMAC-SHA256 and codecs (docs/cache-format.md).
Shared by the door (verifies, reads) and the host (builds, signs): MicroPython code."""
import struct

from crypto.ct import equal
from crypto.hmac256 import HMAC, hmac_sha256  # noqa: F401  (part of this module's interface)

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

_MAGIC = const(b"DWLC")
_FORMAT = const(1)
KIND_SNAPSHOT = const(1)
KIND_DELTA = const(2)

_HDR_FMT = const(">4sBBHIIIHhIHHI")
HDR_SIZE = const(36)
REF_LEN = const(8)
REC_SIZE = const(15)
TAG_SIZE = const(32)
_MAX_SCHED_LEN = const(4096)
_MAX_HOLIDAYS = const(1024)
MAX_SCHEDULE = const(30)
NO_END = const(0xFFFF)
DELETE = const(0xFF)  # flags byte of a delta record that removes the card

ACTIVE = const(0)
LOST = const(1)
SUSPENDED = const(2)
CANCELLED = const(3)
STATUS_NAMES = ("active", "lost", "suspended", "cancelled")

# Update rejection reasons (event codes).
BAD_TAG = "bad_tag"
STALE = "stale_version"
BASE_MISMATCH = "base_mismatch"
MALFORMED = "malformed"
WRONG_SITE = "wrong_site"


class CacheError(Exception):
    """An update or cache file is refused; `reason` is one of the codes above."""

    def __init__(self, reason, detail=""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


# The cache's authentication: HMAC-SHA256 and a constant-time tag comparison, shared with
# the card code (crypto/).
tags_equal = equal


class Header:
    def __init__(self, kind, version, base, site, scope, tz_min, count, sched_len, hol_count,
                 created=0, rec_size=REC_SIZE, fmt=_FORMAT):
        self.kind = kind
        self.version = version
        self.base = base
        self.site = site
        self.scope = scope
        self.tz_min = tz_min
        self.count = count
        self.sched_len = sched_len
        self.hol_count = hol_count
        self.created = created
        self.rec_size = rec_size
        self.fmt = fmt

    def pack(self):
        return struct.pack(_HDR_FMT, _MAGIC, self.fmt, self.kind, self.rec_size, self.version, self.base,
                           self.site, self.scope, self.tz_min, self.count, self.sched_len,
                           self.hol_count, self.created)

    def records_offset(self):
        return HDR_SIZE + self.sched_len + 2 * self.hol_count

    def file_size(self):
        return self.records_offset() + self.count * REC_SIZE + TAG_SIZE


def parse_header(raw, size=None):
    """Header from its 36 bytes; `size` (the file's length) is checked against the counts."""
    if len(raw) < HDR_SIZE:
        raise CacheError(MALFORMED, "short header")
    f = struct.unpack(_HDR_FMT, bytes(raw[:HDR_SIZE]))
    if f[0] != _MAGIC:
        raise CacheError(MALFORMED, "not a whitelist cache")
    if f[1] != _FORMAT:
        raise CacheError(MALFORMED, "format version %d not supported" % f[1])
    if f[2] not in (KIND_SNAPSHOT, KIND_DELTA) or f[3] != REC_SIZE:
        raise CacheError(MALFORMED, "bad kind or record size")
    h = Header(f[2], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[3], f[1])
    if h.sched_len > _MAX_SCHED_LEN or h.hol_count > _MAX_HOLIDAYS:
        raise CacheError(MALFORMED, "schedule or holiday section too large")
    if h.kind == KIND_SNAPSHOT and h.base != 0:
        raise CacheError(MALFORMED, "snapshot with a base version")
    if h.kind == KIND_DELTA and h.base >= h.version:
        raise CacheError(MALFORMED, "delta base not below its version")
    if size is not None and size != h.file_size():
        raise CacheError(MALFORMED, "length %d, header says %d" % (size, h.file_size()))
    return h


# -- records -------------------------------------------------------------------------------
# ref(8) | flags(1): status bits 0-1, master bit 2, schedule bits 3-7 | from u16 | to u16 |
# groups u16. Days are days since 1970-01-01 (site local time); to = 0xFFFF: no end.


def unpack_record(buf, off=0):
    """(ref, flags, start, end, groups) from a 15-byte record."""
    flags, start, end, groups = struct.unpack_from(">BHHH", buf, off + REF_LEN)
    return bytes(buf[off:off + REF_LEN]), flags, start, end, groups


def check_flags(flags, kind):
    if flags == DELETE:
        return kind == KIND_DELTA
    return (flags >> 3) <= MAX_SCHEDULE


# -- schedules and holidays ----------------------------------------------------------------
# schedules: {id: [(days, from_min, to_min), ...]}; days bits 0-6 Monday..Sunday, bit 7 holiday.


def parse_schedules(raw):
    out = {}
    i = 0
    n = len(raw)
    while i < n:
        if i + 2 > n:
            raise CacheError(MALFORMED, "truncated schedule")
        sid, cnt = raw[i], raw[i + 1]
        i += 2
        if not 1 <= sid <= MAX_SCHEDULE or sid in out or i + 5 * cnt > n:
            raise CacheError(MALFORMED, "bad schedule entry")
        ivs = []
        for _ in range(cnt):
            days, lo, hi = struct.unpack_from(">BHH", raw, i)
            if not (0 <= lo < hi <= 1440):
                raise CacheError(MALFORMED, "bad schedule interval")
            ivs.append((days, lo, hi))
            i += 5
        out[sid] = ivs
    return out


# -- time ------------------------------------------------------------------------------------


def local_parts(now, tz_min):
    """(day since 1970, weekday 0=Monday, minute of day) of epoch seconds `now` at the site."""
    t = now + tz_min * 60
    day = t // 86400
    return day, (day + 3) % 7, (t % 86400) // 60
