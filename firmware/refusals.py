"""Inbound messages the door refused, counted in RAM and journaled as one summary a minute.

A refused message (malformed, oversized, retained where it must not be, forged) must cost the
door nothing it cannot afford: no journal record of its own (a flood of junk would fill the
ring and push out real events), no log line of its own (one per reason per summary window),
never the connection. What is kept: a count per reason for the door's status, and at most
one `inbound_refused` record per `window_ms` (docs/protocol.md, "Event codes").
"""

import struct

# inbound_refused event: reason codes in its data (docs/protocol.md, "Refused messages"), each
# reason's code its place in this tuple of constants (frozen into the image; a dict would be
# built in the door's heap at import).
REASONS = (None, "too_large", "not_json", "not_object", "bad_version", "bad_field",
           "bad_event", "bad_topic", "bad_device_id", "unknown_command",
           "unexpected_topic", "too_deep", "retained", "no_memory",
           "error", "bad_mac", "bad_nonce", "bad_chunk", "stale_ack",
           "clock_set", "before_last_record", "out_of_order")  # 1-21


def code(reason):
    """The inbound_refused code of a refusal reason (99: one this version does not list)."""
    return REASONS.index(reason) if reason and reason in REASONS else 99


MAX_REASONS = 4  # (code, count) pairs in one record: 12 bytes of data


class Refusals:
    def __init__(self, window_ms=60000, log=None):
        self.window_ms = window_ms
        self.log = log
        self.by_reason = {}  # since boot: reason -> count (the door's status)
        self.total = 0
        self._pending = {}  # since the last summary record
        self._last_summary = None  # ticks of the last summary record (None: none yet)

    def refuse(self, reason, where=""):
        self.total += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if reason not in self._pending and self.log is not None:
            self.log("uplink: refused", where, reason, "(further ones counted)")
        self._pending[reason] = self._pending.get(reason, 0) + 1

    def due(self, now_ms, diff):
        """True when refusals are waiting and the last summary is a window old."""
        if not self._pending:
            return False
        return self._last_summary is None or diff(now_ms, self._last_summary) >= self.window_ms

    def take(self, now_ms):
        """(count, data) of the summary record for the refusals since the last one: the
        count (capped to 16 bits) and up to MAX_REASONS (code u8, count u16 LE) pairs,
        most frequent first."""
        pending = self._pending
        self._pending = {}
        self._last_summary = now_ms
        n = 0
        for k in pending:
            n += pending[k]
        order = sorted(pending, key=lambda k: -pending[k])[:MAX_REASONS]
        data = b""
        for k in order:
            data += struct.pack("<BH", code(k), min(pending[k], 0xFFFF))
        return min(n, 0xFFFF), data
