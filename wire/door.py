"""Protocol v1, the door's side: what a door encodes (events, presence, registration, status,
whitelist state, replies) and decodes (acks, resend requests, time, commands, whitelist pieces).
Shared parts are in wire/common.py (docs/protocol.md, "Topics")."""

from wire.common import (
    CACHE_CHUNK_MAX,
    CACHE_HDR,
    CACHE_MAGIC,
    CACHE_MAX_FILE,
    COMMANDS,
    NONCE_LEN,
    VERSION,
    ProtocolError,
    dumps,
    dumps_into,
    get_int,
    get_str,
    limit,
    loads,
)

# -- events (device -> platform) ---------------------------------------------------------


def encode_events(boot, events, gone=None):
    """events: list of 8-item lists/tuples (seq, code, boot, time, ms, flags, arg, data_hex).
    `gone`: (first, last) sequence numbers the platform asked for again (`resend`) that the
    device no longer holds; with it, `events` may be empty."""
    obj = {"v": VERSION, "boot": boot, "ev": events}
    if gone is not None:
        obj["gone"] = [gone[0], gone[1]]
    return dumps(obj)


def encode_events_into(buf, boot, events, gone=None):
    """encode_events written into `buf` (a bytearray the door made once): the payload's
    length, or -1 when it does not fit or holds something other than ints and plain ASCII
    strings (the caller then uses encode_events). A batch built as one JSON string needs
    2-3 KiB in one piece twice over (the string, then its bytes); a busy heap may not have it."""
    mv = memoryview(buf)
    p = events_open(mv, boot)
    for i in range(len(events)):
        p = events_put(mv, p, events[i], i)
    return events_close(mv, p, gone)


# The same message written an event at a time (the door's sender: one event's objects alive at
# once, not a whole batch of them). Each returns the position after what it wrote, or -1 from
# the first piece that did not fit on.
EVENTS_TAIL = 40  # room events_close needs at most (`gone` with two 32-bit numbers)


def events_open(mv, boot):
    return _put(mv, 0, b'{"v": %d, "boot": %d, "ev": [' % (VERSION, boot))


def events_put(mv, p, e, i, end=None):
    """Event `e` (the i-th of the message) at p, ending before `end` (default: the buffer's);
    -1 when it does not fit or is not 7 ints and a plain ASCII string."""
    if p < 0 or len(e) != 8:
        return -1
    for k in range(7):
        if type(e[k]) is not int:
            return -1
    data = e[7]
    if isinstance(data, str):
        data = data.encode()
    for c in data:
        if c < 0x20 or c > 0x7E or c == 0x22 or c == 0x5C:  # nothing JSON would escape
            return -1
    if end is None:
        end = len(mv)
    if i:
        p = _put(mv, p, b", ", end)
    p = _put(mv, p, b'[%d, %d, %d, %d, %d, %d, %d, "' % (e[0], e[1], e[2], e[3], e[4], e[5],
                                                       e[6]), end)
    p = _put(mv, p, data, end)
    return _put(mv, p, b'"]', end)


def events_close(mv, p, gone=None):
    p = _put(mv, p, b"]")
    if gone is not None:
        p = _put(mv, p, b', "gone": [%d, %d]' % (gone[0], gone[1]))
    return _put(mv, p, b"}")


def _put(mv, p, data, end=None):
    """Copy `data` into mv at p; the position after it, or -1 (from then on) past the end (of
    mv, or `end`)."""
    if p < 0 or p + len(data) > (len(mv) if end is None else end):
        return -1
    mv[p:p + len(data)] = data
    return p + len(data)


def decode_signed_ack(payload):
    """(upto, boot or None, mac hex or "") of an ack."""
    obj = loads(payload, limit("ack"))
    upto = get_int(obj, "upto", 0)
    boot = get_int(obj, "boot", 0, 0xFFFF) if "boot" in obj else None
    mac = obj.get("mac", "")
    if not isinstance(mac, str) or len(mac) > 64:
        raise ProtocolError("bad_field", "mac")
    return upto, boot, mac


def decode_ack(payload):
    return decode_signed_ack(payload)[0]


def decode_resend(payload):
    obj = loads(payload, limit("resend"))
    first = get_int(obj, "from", 1)
    last = get_int(obj, "to", 1)
    if last < first:
        raise ProtocolError("bad_field", "to")
    return first, last


# -- presence, status, time ---------------------------------------------------------------


def encode_presence(online, boot=0, firmware="", nonce=""):
    """`nonce`: hex the door drew for this connection; the platform signs it back with the
    time (docs/protocol.md, "Time sync")."""
    obj = {"v": VERSION, "online": bool(online)}
    if online:
        obj["boot"] = boot
        obj["fw"] = firmware
        if nonce:
            obj["nonce"] = nonce
    return dumps(obj)


# -- registration (device -> platform, retained) ----------------------------------------
def encode_register(site, door, firmware, lock, cards, tls, client_cert, commissioned_at,
                    keys="site"):
    """What the door was commissioned as: no keys, no personal data (docs/protocol.md).
    `keys`: "door" (its own command and cache keys) or "site" (the site-wide ones)."""
    return dumps({"v": VERSION, "site": site, "door": door, "fw": firmware, "lock": lock,
                   "cards": cards, "tls": bool(tls), "client_cert": bool(client_cert),
                   "commissioned_at": commissioned_at, "keys": keys})


def encode_status(report, buf=None):
    """Patrol/status report: a flat dict of the fields in docs/protocol.md. With `buf` (the
    uplink's own buffer), written there when it fits (common.dumps_into)."""
    obj = {"v": VERSION}
    obj.update(report)
    if buf is not None:
        out = dumps_into(buf, obj)
        if out is not None:
            return out
    return dumps(obj, True)


def decode_signed_time(payload):
    """(t ms, nonce, mac): nonce and mac are "" in an unsigned time message."""
    obj = loads(payload, limit("time"))
    v = obj.get("t")
    # 2020-01-01 .. 2100-01-01 in ms: a clock outside this window is refused.
    if not isinstance(v, int) or isinstance(v, bool) or not 1577836800000 <= v <= 4102444800000:
        raise ProtocolError("bad_field", "t")
    nonce = obj.get("nonce", "")
    mac = obj.get("mac", "")
    if not isinstance(nonce, str) or len(nonce) > 2 * NONCE_LEN:
        raise ProtocolError("bad_field", "nonce")
    if not isinstance(mac, str) or len(mac) > 64:
        raise ProtocolError("bad_field", "mac")
    return v, nonce, mac


def decode_time(payload):
    """The time in ms of a time message (signed or not: decode_signed_time has the rest)."""
    return decode_signed_time(payload)[0]


def decode_command(payload):
    """(id, op, args, expires, mac) of a command; authentication is checked by the caller."""
    obj = loads(payload, limit("cmd"))
    cmd_id = get_str(obj, "id", 40)
    op = get_str(obj, "op", 16)
    if op not in COMMANDS:
        raise ProtocolError("unknown_command", op)
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("bad_field", "args")
    expires = obj.get("exp", 0)
    if not isinstance(expires, int) or isinstance(expires, bool) or expires < 0:
        raise ProtocolError("bad_field", "exp")
    mac = obj.get("mac", "")
    if not isinstance(mac, str) or len(mac) > 128:
        raise ProtocolError("bad_field", "mac")
    return cmd_id, op, args, expires, mac


def decode_cache_chunk(payload):
    """(version, total, offset, tag, memoryview of the data) or ProtocolError; the tag is
    checked by the caller, who holds the key (firmware/cache_sync.py)."""
    import struct

    if payload is None or len(payload) < CACHE_HDR or payload[:4] != CACHE_MAGIC:
        raise ProtocolError("bad_chunk")
    if len(payload) > CACHE_HDR + CACHE_CHUNK_MAX:
        raise ProtocolError("too_large")
    version, total, offset = struct.unpack(">III", bytes(payload[4:16]))
    n = len(payload) - CACHE_HDR
    if not 0 < total <= CACHE_MAX_FILE or offset + n > total or (n == 0 and offset < total):
        raise ProtocolError("bad_chunk")
    mv = memoryview(payload)
    return version, total, offset, bytes(mv[16:CACHE_HDR]), mv[CACHE_HDR:]


def encode_cache_state(version, receiving=0, have=0, reason="", content=None):
    """`content`: the content hash of the whitelist the door decides from, if it has one."""
    obj = {"v": VERSION, "version": version, "receiving": receiving, "have": have}
    if reason:
        obj["reason"] = reason
    if content:
        obj["hash"] = content
    return dumps(obj)


def encode_reply(cmd_id, ok, reason=""):
    obj = {"v": VERSION, "id": cmd_id, "ok": bool(ok)}
    if reason:
        obj["reason"] = reason
    return dumps(obj)
