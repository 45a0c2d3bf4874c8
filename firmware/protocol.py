"""Protocol v1 codec: MQTT topics and payloads between door controllers and the platform.

Shared by the firmware (MicroPython) and the reference platform (CPython): one module, one
set of test vectors. Every decoder validates fully and raises ProtocolError with a short
reason code; nothing malformed gets past it. See docs/protocol.md for the field tables.
"""

import json

VERSION = 1
ROOT = "door/v1/"
# The platform asks every door to announce itself again (presence, whitelist state): on a broker
# whose retained messages never reach a wildcard subscription (RabbitMQ), this is how a
# platform that starts learns the doors. Three levels: no `door/v1/+/leaf` filter matches it.
ANNOUNCE_TOPIC = ROOT + "announce"

MAX_PAYLOAD = 16384  # bytes; larger inbound payloads are refused before parsing
MAX_DEPTH = 4  # nesting of JSON arrays/objects; deeper payloads are refused before parsing

# Largest payload per topic leaf, in bytes (docs/protocol.md, "Topics"). The door reads a
# bigger one in fixed chunks and drops it without ever holding it; the platform refuses it.
# A leaf not listed here is not part of the protocol: limit 0.
LIMITS = {
    "events": MAX_PAYLOAD, "status": 4096, "presence": 256, "register": 512, "reply": 256,
    "cache_state": 256, "ack": 256, "resend": 256, "time": 256,
    "cmd": 2048,  # a `keys` command carries a sealed door key file (about 1.3 KB)
    "cache": 32 + 2048,  # CACHE_HDR + CACHE_CHUNK: a whitelist file is streamed in pieces
}


def limit(leaf):
    """The largest payload allowed on a topic leaf (0: not a protocol topic)."""
    return LIMITS.get(leaf, 0)
MAX_BATCH = 200  # events per events message
DEVICE_ID_MAX = 64

# Event tuple positions in an events message.
E_SEQ, E_CODE, E_BOOT, E_TIME, E_MS, E_FLAGS, E_ARG, E_DATA = range(8)

# Event flags (also stored in the journal record).
FLAG_TIME_VALID = 0x01  # time is UTC epoch seconds
FLAG_TIME_CORRECTED = 0x02  # recorded before the clock was set, corrected at upload
FLAG_LOW_ASSURANCE = 0x04  # decision from a legacy card profile (UID-only / Classic)
FLAG_REKEYED = 0x08  # the door re-keyed the card to the site's current key version
FLAG_TIME_UNTRUSTED = 0x10  # stamped by a clock set from an unsigned time (or corrected by one)


class ProtocolError(ValueError):
    """A message that does not follow protocol v1; `reason` is a short code for events."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason


def _valid_id_char(c):
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in "-_."


def check_device_id(device_id):
    if not isinstance(device_id, str) or not 0 < len(device_id) <= DEVICE_ID_MAX:
        raise ProtocolError("bad_device_id")
    for c in device_id:
        if not _valid_id_char(c):
            raise ProtocolError("bad_device_id", device_id)
    return device_id


def topic(device_id, leaf):
    """`door/v1/<device>/<leaf>`: leaf is events, status, presence, reply, ack, cmd, time."""
    return ROOT + check_device_id(device_id) + "/" + leaf


def split_topic(t):
    """(device_id, leaf) of a v1 topic, or ProtocolError.

    A broker that maps MQTT levels to AMQP routing-key words (RabbitMQ) hands a device id's
    dots back as levels: `door/v1/site/b1/d1/ack` for `site.b1.d1`. An id never holds a `/`,
    so the levels between the root and the leaf are the id's parts."""
    if isinstance(t, (bytes, bytearray)):
        t = bytes(t).decode()
    if not t.startswith(ROOT):
        raise ProtocolError("bad_topic")
    rest = t[len(ROOT) :]
    cut = rest.rfind("/")
    if cut <= 0:
        raise ProtocolError("bad_topic")
    return check_device_id(rest[:cut].replace("/", ".")), rest[cut + 1 :]


DEVICE_LEVELS = 4  # a wildcard filter reaches ids of up to 3 dots on such a broker


def filters(leaf):
    """The filters that reach `leaf` of every door on any broker: `door/v1/+/leaf`, and with
    one more `+` per dot an id may hold on a broker that makes dots levels."""
    return [ROOT + "+/" * n + leaf for n in range(1, DEVICE_LEVELS + 1)]


def _dumps(obj):
    return json.dumps(obj).encode()


def check_shape(payload, max_len=MAX_PAYLOAD, max_depth=MAX_DEPTH):
    """Refuse, before any parser sees it, a payload longer than `max_len` or nested deeper
    than `max_depth` (arrays and objects, outside strings): the JSON parser recurses and
    allocates per level, and a few KiB of `[[[[` would exhaust a door's heap or stack."""
    if payload is None or len(payload) > max_len:
        raise ProtocolError("too_large")
    depth = 0
    in_str = False
    esc = False
    for c in payload:
        if in_str:
            if esc:
                esc = False
            elif c == 0x5C:  # backslash
                esc = True
            elif c == 0x22:  # quote
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c == 0x5B or c == 0x7B:  # [ {
            depth += 1
            if depth > max_depth:
                raise ProtocolError("too_deep")
        elif c == 0x5D or c == 0x7D:  # ] }
            depth -= 1


def _loads(payload, max_len=MAX_PAYLOAD):
    if isinstance(payload, str):
        payload = payload.encode()
    check_shape(payload, max_len)
    try:
        try:
            obj = json.loads(payload)
        except TypeError:  # CPython's parser takes no memoryview (the door's read buffer)
            obj = json.loads(bytes(payload))
    except (ValueError, UnicodeError):
        raise ProtocolError("not_json")
    if not isinstance(obj, dict):
        raise ProtocolError("not_object")
    if obj.get("v") != VERSION:
        raise ProtocolError("bad_version")
    return obj


def _int(obj, key, lo=0, hi=0xFFFFFFFF):
    v = obj.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtocolError("bad_field", key)
    return v


def _str(obj, key, max_len=64, optional=False):
    v = obj.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not 0 < len(v) <= max_len:
        raise ProtocolError("bad_field", key)
    return v


# -- events (device -> platform) ---------------------------------------------------------


def encode_events(boot, events, gone=None):
    """events: list of 8-item lists/tuples (seq, code, boot, time, ms, flags, arg, data_hex).
    `gone`: (first, last) sequence numbers the platform asked for again (`resend`) that the
    device no longer holds; with it, `events` may be empty."""
    obj = {"v": VERSION, "boot": boot, "ev": events}
    if gone is not None:
        obj["gone"] = [gone[0], gone[1]]
    return _dumps(obj)


def encode_events_into(buf, boot, events, gone=None):
    """encode_events written into `buf` (a bytearray the door made once): the payload's
    length, or -1 when it does not fit or holds something other than ints and plain ASCII
    strings (the caller then uses encode_events). A batch built as one JSON string needs
    2-3 KiB in one piece twice over (the string, then its bytes); a busy heap may not have it."""
    mv = memoryview(buf)
    p = _put(mv, 0, b'{"v": %d, "boot": %d, "ev": [' % (VERSION, boot))
    for i in range(len(events)):
        e = events[i]
        if len(e) != 8:
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
        if i:
            p = _put(mv, p, b", ")
        p = _put(mv, p, b'[%d, %d, %d, %d, %d, %d, %d, "' % (e[0], e[1], e[2], e[3], e[4], e[5],
                                                           e[6]))
        p = _put(mv, p, data)
        p = _put(mv, p, b'"]')
    p = _put(mv, p, b"]")
    if gone is not None:
        p = _put(mv, p, b', "gone": [%d, %d]' % (gone[0], gone[1]))
    return _put(mv, p, b"}")


def _put(mv, p, data):
    """Copy `data` into mv at p; the position after it, or -1 (from then on) past the end."""
    if p < 0 or p + len(data) > len(mv):
        return -1
    mv[p:p + len(data)] = data
    return p + len(data)


def decode_events(payload):
    """Validated list of event tuples, in the order sent (seqs strictly increasing)."""
    return decode_batch(payload)[1]


def _range(obj, key):
    """An optional [first, last] pair of sequence numbers (1 <= first <= last), or None."""
    v = obj.get(key)
    if v is None:
        return None
    if (not isinstance(v, list) or len(v) != 2 or not isinstance(v[0], int)
            or not isinstance(v[1], int) or isinstance(v[0], bool) or isinstance(v[1], bool)
            or not 1 <= v[0] <= v[1] <= 0xFFFFFFFF):
        raise ProtocolError("bad_field", key)
    return v[0], v[1]


def decode_batch(payload):
    """(boot, event tuples, gone range or None) of an events message."""
    obj = _loads(payload)
    boot = _int(obj, "boot", 0, 0xFFFF)
    gone = _range(obj, "gone")
    ev = obj.get("ev")
    if not isinstance(ev, list) or not (0 if gone else 1) <= len(ev) <= MAX_BATCH:
        raise ProtocolError("bad_field", "ev")
    out = []
    last = 0
    for e in ev:
        if not isinstance(e, list) or len(e) != 8:
            raise ProtocolError("bad_event")
        for i in range(7):
            if not isinstance(e[i], int) or isinstance(e[i], bool) or e[i] < 0:
                raise ProtocolError("bad_event")
        if e[E_SEQ] <= last or e[E_SEQ] > 0xFFFFFFFF or e[E_CODE] > 255 or e[E_MS] > 999:
            raise ProtocolError("bad_event")
        if e[E_BOOT] > 0xFFFF or e[E_FLAGS] > 255 or e[E_ARG] > 0xFFFF or e[E_TIME] > 0xFFFFFFFF:
            raise ProtocolError("bad_event")
        data = e[E_DATA]
        if not isinstance(data, str) or len(data) > 24 or len(data) % 2:
            raise ProtocolError("bad_event")
        for c in data:
            if c not in "0123456789abcdef":
                raise ProtocolError("bad_event")
        last = e[E_SEQ]
        out.append(tuple(e))
    return boot, out, gone


# -- acknowledgements (platform -> device) ------------------------------------------------


def encode_ack(upto, boot=None, mac=""):
    """The platform has durably stored every event of this device up to `upto`. `mac`: hex
    HMAC-SHA256 of ack_signing_bytes with the site's `command` key, for the door's `boot`."""
    obj = {"v": VERSION, "upto": upto}
    if boot is not None:
        obj["boot"] = boot
    if mac:
        obj["mac"] = mac
    return _dumps(obj)


def decode_ack(payload):
    return decode_signed_ack(payload)[0]


def decode_signed_ack(payload):
    """(upto, boot or None, mac hex or "") of an ack."""
    obj = _loads(payload, LIMITS["ack"])
    upto = _int(obj, "upto", 0)
    boot = _int(obj, "boot", 0, 0xFFFF) if "boot" in obj else None
    mac = obj.get("mac", "")
    if not isinstance(mac, str) or len(mac) > 64:
        raise ProtocolError("bad_field", "mac")
    return upto, boot, mac


def ack_signing_bytes(device_id, boot, upto):
    """What an ack's MAC covers: the device, its boot (u16) and the sequence number."""
    return b"door-ack/v1|" + _field(device_id) + b"%d|%d" % (boot, upto)


# -- resend requests (platform -> device) -------------------------------------------------


def encode_resend(first, last):
    """Send events first..last again: the platform holds the events after them, not these."""
    return _dumps({"v": VERSION, "from": first, "to": last})


def decode_resend(payload):
    obj = _loads(payload, LIMITS["resend"])
    first = _int(obj, "from", 1)
    last = _int(obj, "to", 1)
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
    return _dumps(obj)


def decode_presence(payload):
    obj = _loads(payload, LIMITS["presence"])
    if not isinstance(obj.get("online"), bool):
        raise ProtocolError("bad_field", "online")
    if "nonce" in obj:
        n = obj["nonce"]
        if not isinstance(n, str) or len(n) != NONCE_LEN or [c for c in n if c not in "0123456789abcdef"]:
            raise ProtocolError("bad_field", "nonce")
    return obj


# -- registration (device -> platform, retained) ----------------------------------------

LOCKS = ("fail-secure", "fail-safe")
CARD_PROFILES = ("desfire_ev2", "legacy_uid", "legacy_classic")


def encode_register(site, door, firmware, lock, cards, tls, client_cert, commissioned_at,
                    keys="site"):
    """What the door was commissioned as: no keys, no personal data (docs/protocol.md).
    `keys`: "door" (its own command and cache keys) or "site" (the site-wide ones)."""
    return _dumps({"v": VERSION, "site": site, "door": door, "fw": firmware, "lock": lock,
                   "cards": cards, "tls": bool(tls), "client_cert": bool(client_cert),
                   "commissioned_at": commissioned_at, "keys": keys})


def decode_register(payload):
    obj = _loads(payload)
    _int(obj, "site")
    _int(obj, "door", 0, 15)
    _str(obj, "fw", 32)
    _int(obj, "commissioned_at")
    if obj.get("lock") not in LOCKS:
        raise ProtocolError("bad_field", "lock")
    cards = obj.get("cards")
    if not isinstance(cards, list) or not cards or [c for c in cards if c not in CARD_PROFILES]:
        raise ProtocolError("bad_field", "cards")
    for k in ("tls", "client_cert"):
        if not isinstance(obj.get(k), bool):
            raise ProtocolError("bad_field", k)
    if obj.setdefault("keys", "site") not in ("site", "door"):  # absent: firmware before per-door keys
        raise ProtocolError("bad_field", "keys")
    return obj


def encode_status(report):
    """Patrol/status report: a flat dict of the fields in docs/protocol.md."""
    obj = {"v": VERSION}
    obj.update(report)
    return _dumps(obj)


def decode_status(payload):
    obj = _loads(payload)
    _int(obj, "seq", 0)
    return obj


def encode_time(epoch_ms):
    return _dumps({"v": VERSION, "t": epoch_ms})


def decode_time(payload):
    """The time in ms of a time message (signed or not: decode_signed_time has the rest)."""
    return decode_signed_time(payload)[0]


NONCE_LEN = 16  # hex digits of the door's per-connection nonce (8 random bytes)


def encode_signed_time(epoch_ms, nonce, mac):
    return _dumps({"v": VERSION, "t": epoch_ms, "nonce": nonce, "mac": mac})


def decode_signed_time(payload):
    """(t ms, nonce, mac): nonce and mac are "" in an unsigned time message."""
    obj = _loads(payload, LIMITS["time"])
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


def time_signing_bytes(device_id, nonce, epoch_ms):
    """What a signed time's MAC covers (docs/protocol.md, "Time sync"): the door, the nonce
    it announced on this connection and the time, length-prefixed."""
    return b"door-time/v1|" + _field(device_id) + _field(nonce) + b"%d" % epoch_ms


# -- commands (platform -> device) and replies ---------------------------------------------

COMMANDS = ("open", "patrol", "mode", "time", "config", "keys")


def encode_command(cmd_id, op, args=None, expires=0, mac=""):
    obj = {"v": VERSION, "id": cmd_id, "op": op}
    if args:
        obj["args"] = args
    if expires:
        obj["exp"] = expires
    if mac:
        obj["mac"] = mac
    return _dumps(obj)


def decode_command(payload):
    """(id, op, args, expires, mac) of a command; authentication is checked by the caller."""
    obj = _loads(payload, LIMITS["cmd"])
    cmd_id = _str(obj, "id", 40)
    op = _str(obj, "op", 16)
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


# -- whitelist updates (platform -> device), binary ---------------------------------------
# "DWU2" | version u32 | total u32 | offset u32 | tag (16) | bytes of the signed cache file
# The tag authenticates each piece on its own (the file's own tag comes only at its end), so
# the door checks the file's header (site, version, length) before it writes a byte, and stops
# at the first piece that is not the platform's (docs/protocol.md, "Whitelist updates").
CACHE_MAGIC = b"DWU2"
CACHE_TAG = 16
CACHE_HDR = 16 + CACHE_TAG
CACHE_CHUNK = 2048  # bytes per message: a contiguous allocation the busy door heap can always find
CACHE_MAX_FILE = 4 * 1024 * 1024


def cache_chunk_tag(key, version, total, offset, data):
    """HMAC-SHA256 with the site's cache key over "door-cache-chunk/v1|", the three numbers
    (u32 BE) and the piece, cut to 16 bytes."""
    import struct

    from crypto.hmac256 import HMAC

    mac = HMAC(key)
    mac.update(b"door-cache-chunk/v1|" + struct.pack(">III", version, total, offset))
    mac.update(data)
    return mac.digest()[:CACHE_TAG]


def encode_cache_chunk(version, total, offset, data, key):
    import struct

    tag = cache_chunk_tag(key, version, total, offset, data)
    return CACHE_MAGIC + struct.pack(">III", version, total, offset) + tag + bytes(data)


def decode_cache_chunk(payload):
    """(version, total, offset, tag, memoryview of the data) or ProtocolError; the tag is
    checked by the caller, who holds the key (firmware/cache_sync.py)."""
    import struct

    if payload is None or len(payload) < CACHE_HDR or payload[:4] != CACHE_MAGIC:
        raise ProtocolError("bad_chunk")
    if len(payload) > CACHE_HDR + CACHE_CHUNK:
        raise ProtocolError("too_large")
    version, total, offset = struct.unpack(">III", bytes(payload[4:16]))
    n = len(payload) - CACHE_HDR
    if not 0 < total <= CACHE_MAX_FILE or offset + n > total or (n == 0 and offset < total):
        raise ProtocolError("bad_chunk")
    mv = memoryview(payload)
    return version, total, offset, bytes(mv[16:CACHE_HDR]), mv[CACHE_HDR:]


CONTENT_HASH_LEN = 16  # hex digits (offline_cache/fmt.py content_hash)


def encode_cache_state(version, receiving=0, have=0, reason="", content=None):
    """`content`: the content hash of the whitelist the door decides from, if it has one."""
    obj = {"v": VERSION, "version": version, "receiving": receiving, "have": have}
    if reason:
        obj["reason"] = reason
    if content:
        obj["hash"] = content
    return _dumps(obj)


def decode_cache_state(payload):
    obj = _loads(payload)
    _int(obj, "version")
    _int(obj, "receiving")
    _int(obj, "have")
    if "reason" in obj:
        _str(obj, "reason", 32)
    if "hash" in obj:
        h = obj["hash"]
        if not isinstance(h, str) or len(h) != CONTENT_HASH_LEN:
            raise ProtocolError("bad_field", "hash")
        for c in h:
            if c not in "0123456789abcdef":
                raise ProtocolError("bad_field", "hash")
    return obj


COMMAND_TTL = 60  # s: a signed command is valid from exp - COMMAND_TTL to exp
SIGNED_COMMANDS = ("open", "mode", "time", "config", "keys")  # need a MAC; "patrol" does not


def _field(text):
    b = text.encode() if isinstance(text, str) else bytes(text)
    return b"%d:" % len(b) + b


def command_signing_parts(device_id, cmd_id, op, args, expires):
    """What a command's MAC covers (docs/protocol.md), in pieces: device, id, op, expiry and
    the arguments in sorted key order, each length-prefixed so no field can bleed into
    another. Argument values are strings, integers or booleans. A door feeds the pieces to
    its HMAC one by one: a long argument (a sealed key file) is never copied into one message
    in a busy heap."""
    yield b"door-cmd/v1|" + _field(device_id) + _field(cmd_id) + _field(op) + b"%d|" % expires
    for k in sorted(args):
        v = args[k]
        if isinstance(v, bool):
            yield _field(k) + _field(b"b" + (b"1" if v else b"0"))
        elif isinstance(v, int):
            yield _field(k) + _field(b"i%d" % v)
        elif isinstance(v, str):
            b = v.encode()
            yield _field(k) + b"%d:s" % (len(b) + 1)
            yield b
        else:
            raise ProtocolError("bad_field", "args")


def command_signing_bytes(device_id, cmd_id, op, args, expires):
    """command_signing_parts in one piece (the platform's side)."""
    return b"".join(command_signing_parts(device_id, cmd_id, op, args, expires))


def encode_reply(cmd_id, ok, reason=""):
    obj = {"v": VERSION, "id": cmd_id, "ok": bool(ok)}
    if reason:
        obj["reason"] = reason
    return _dumps(obj)


def decode_reply(payload):
    obj = _loads(payload)
    _str(obj, "id", 40)
    if not isinstance(obj.get("ok"), bool):
        raise ProtocolError("bad_field", "ok")
    return obj
