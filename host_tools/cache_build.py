"""Building signed whitelist files (docs/cache-format.md): records, schedules and holidays
packed, the snapshot or delta streamed and tagged. Only the platform, the tools and the tests
build files; the door only reads them (offline_cache/fmt.py), so this module is neither frozen
nor deployed. MicroPython code: the shared and device tests build their files with it.
"""

import struct

from crypto.hmac256 import HMAC
from offline_cache.fmt import DELETE, MALFORMED, MAX_SCHEDULE, REC_SIZE, REF_LEN, CacheError, Header


def pack_record(ref, status, master, schedule, start, end, groups, delete=False):
    if delete:
        flags = DELETE
    else:
        flags = (status & 3) | (4 if master else 0) | ((schedule & 31) << 3)
    return bytes(ref) + struct.pack(">BHHH", flags, start, end, groups)


def pack_schedules(schedules):
    out = bytearray()
    for sid in sorted(schedules):
        ivs = schedules[sid]
        if not 1 <= sid <= MAX_SCHEDULE or len(ivs) > 255:
            raise CacheError(MALFORMED, "schedule id %d out of range" % sid)
        out += struct.pack(">BB", sid, len(ivs))
        for days, lo, hi in ivs:
            if not (0 <= lo < hi <= 1440):
                raise CacheError(MALFORMED, "bad interval in schedule %d" % sid)
            out += struct.pack(">BHH", days, lo, hi)
    return bytes(out)


def pack_holidays(days):
    days = sorted(set(days))
    return b"".join(struct.pack(">H", d) for d in days), len(days)


def write(f, key, kind, version, base, site, scope, tz_min, count, records, schedules, holidays,
          created=0):
    """Stream a signed snapshot or delta to file `f`: `records` yields `count` packed records
    already sorted by reference (unique). Returns the tag."""
    sched = pack_schedules(schedules)
    hol, nhol = pack_holidays(holidays)
    hdr = Header(kind, version, base, site, scope, tz_min, count, len(sched), nhol, created)
    mac = HMAC(key)
    for part in (hdr.pack(), sched, hol):
        mac.update(part)
        f.write(part)
    prev = None
    n = 0
    for r in records:
        if len(r) != REC_SIZE or (prev is not None and r[:REF_LEN] <= prev):
            raise CacheError(MALFORMED, "records must be 15 bytes, sorted, unique")
        prev = r[:REF_LEN]
        mac.update(r)
        f.write(r)
        n += 1
    if n != count:
        raise CacheError(MALFORMED, "record count")
    tag = mac.digest()
    f.write(tag)
    return tag


class _Buf:
    def __init__(self):
        self.b = bytearray()

    def write(self, data):
        self.b += data


def build(key, kind, version, base, site, scope, tz_min, records, schedules, holidays, created=0):
    """A signed snapshot or delta as bytes. `records`: packed records, any order, unique refs."""
    recs = sorted(records)
    out = _Buf()
    write(out, key, kind, version, base, site, scope, tz_min, len(recs), recs, schedules, holidays,
          created)
    return bytes(out.b)
