"""Protocol v1, the part both sides use: topics, limits, flags, the error, the validators and
the bytes each MAC covers (docs/protocol.md).

The wire format is shared by the door (MicroPython) and the platform (CPython): one package,
one set of test vectors (tests/shared). What the door encodes and decodes is wire/door.py;
what only the platform does is wire/platform.py, which device code never imports. Every
decoder validates fully and raises ProtocolError with a short reason code.
"""

import json

try:
    from micropython import const
except ImportError:  # CPython (the platform, host tools)

    def const(x):
        return x


VERSION = const(1)
ROOT = "door/v1/"
# The platform asks every door to announce itself again (presence, whitelist state): on a broker
# whose retained messages never reach a wildcard subscription (RabbitMQ), this is how a
# platform that starts learns the doors. Three levels: no `door/v1/+/leaf` filter matches it.
ANNOUNCE_TOPIC = ROOT + "announce"

MAX_PAYLOAD = const(16384)  # bytes; larger inbound payloads are refused before parsing
MAX_DEPTH = const(4)  # nesting of JSON arrays/objects; deeper payloads are refused before parsing

# Largest payload per topic leaf, in bytes (docs/protocol.md, "Topics"). The door reads a
# bigger one in fixed chunks and drops it without ever holding it; the platform refuses it.
# A leaf not listed here is not part of the protocol: limit 0. Pairs of constants, which the
# image keeps in ROM (a dict would be built in the door's heap at import).
_LIMITS = const((
    ("events", MAX_PAYLOAD), ("status", 4096), ("presence", 256), ("register", 512),
    ("reply", 256), ("cache_state", 256), ("ack", 256), ("resend", 256), ("time", 256),
    ("cmd", 2048),  # a `keys` command carries a sealed door key file (about 1.3 KB)
    ("cache", 32 + 2048),  # CACHE_HDR + CACHE_CHUNK_MAX: a whitelist file is streamed in pieces
))


def limit(leaf):
    """The largest payload allowed on a topic leaf (0: not a protocol topic)."""
    for name, n in _LIMITS:
        if name == leaf:
            return n
    return 0


MAX_BATCH = const(200)  # events per events message
# The site's local time, minutes east of UTC (China: UTC+8): the one default of the doors'
# schedules (config `tz_offset_min`), the whitelist files' and the tools' idea of "today".
SITE_TZ_MIN = const(480)
_DEVICE_ID_MAX = const(64)

# Event tuple positions in an events message.
E_SEQ, E_CODE, E_BOOT, E_TIME, E_MS, E_FLAGS, E_ARG, E_DATA = range(8)

# Event flags (also stored in the journal record).
FLAG_TIME_VALID = const(0x01)  # time is UTC epoch seconds
FLAG_TIME_CORRECTED = const(0x02)  # recorded before the clock was set, corrected at upload
FLAG_LOW_ASSURANCE = const(0x04)  # decision from a legacy card profile (UID-only / Classic)
FLAG_REKEYED = const(0x08)  # the door re-keyed the card to the site's current key version
FLAG_TIME_UNTRUSTED = const(0x10)  # stamped by a clock set from an unsigned time (or corrected by one)


class ProtocolError(ValueError):
    """A message that does not follow protocol v1; `reason` is a short code for events."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason


def _valid_id_char(c):
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in "-_."


def check_device_id(device_id):
    if not isinstance(device_id, str) or not 0 < len(device_id) <= _DEVICE_ID_MAX:
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


_DEVICE_LEVELS = const(4)  # a wildcard filter reaches ids of up to 3 dots on such a broker


def filters(leaf):
    """The filters that reach `leaf` of every door on any broker: `door/v1/+/leaf`, and with
    one more `+` per dot an id may hold on a broker that makes dots levels."""
    return [ROOT + "+/" * n + leaf for n in range(1, _DEVICE_LEVELS + 1)]


def dumps(obj, view=False):
    """JSON as bytes; with `view`, on MicroPython, a memoryview of the string's UTF-8 bytes
    instead: no copy of a message as long as the door's status report (up to ~500 bytes,
    asked of a busy heap; it has a length in bytes and writes to a socket like bytes)."""
    s = json.dumps(obj)
    if view:
        try:
            return memoryview(s)
        except TypeError:  # CPython: a str has no buffer
            pass
    return s.encode()


try:
    from io import IOBase as _Stream  # MicroPython's json.dump writes to a stream object
except ImportError:  # a port without it: dumps_into answers None (the caller uses dumps)
    _Stream = object


class _Into(_Stream):
    """A stream over a buffer for json.dump: the message is written in small pieces, so no
    string of its whole size is asked of the heap (a fragmented door heap may have the bytes
    free but not in one piece: a patrol report's 300-500 bytes failed at 66 KiB)."""

    def __init__(self, buf):
        self.mv = memoryview(buf)
        self.n = 0

    def write(self, b):
        if isinstance(b, str):  # CPython's json writes str pieces
            b = b.encode()
        n = self.n
        if n + len(b) > len(self.mv):
            raise ValueError("full")
        self.mv[n:n + len(b)] = b
        self.n = n + len(b)
        return len(b)


def dumps_into(buf, obj):
    """dumps(obj) written into `buf`: a memoryview of the message there, or None when it does
    not fit (or this interpreter's json cannot write to a stream)."""
    w = _Into(buf)
    try:
        json.dump(obj, w)
    except Exception:  # noqa: BLE001 - too long, or no stream support: the caller uses dumps
        return None
    return w.mv[:w.n]


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


def loads(payload, max_len=MAX_PAYLOAD):
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


def get_int(obj, key, lo=0, hi=0xFFFFFFFF):
    v = obj.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtocolError("bad_field", key)
    return v


def get_str(obj, key, max_len=64, optional=False):
    v = obj.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not 0 < len(v) <= max_len:
        raise ProtocolError("bad_field", key)
    return v


def prefixed(text):
    """`text` (str or bytes) with its length in front: no field can bleed into the next."""
    b = text.encode() if isinstance(text, str) else bytes(text)
    return b"%d:" % len(b) + b


NONCE_LEN = const(16)  # hex digits of the door's per-connection nonce (8 random bytes)
CONTENT_HASH_LEN = const(16)  # hex digits (offline_cache/fmt.py content_hash)
LOCKS = ("fail-secure", "fail-safe")
CARD_PROFILES = ("desfire_ev2", "legacy_uid", "legacy_classic")
COMMANDS = ("open", "patrol", "mode", "time", "config", "keys")
# Config keys a `config` command may change (the door checks them, commissioning too), with their
# allowed range (door timings in ms): constants the image keeps in ROM, read by config_limits().
_CONFIG_LIMITS = const((
    ("unlock_ms", (500, 60000)), ("prealarm_ms", (1000, 600000)),
    ("held_open_ms", (1000, 3600000)), ("closer_limit_ms", (1000, 600000)),
    ("closer_slow_count", (1, 20)), ("bounce_ms", (100, 10000)), ("closer_bounce_count", (1, 20)),
    ("deny_ms", (100, 10000)), ("patrol_interval_s", (10, 86400)),
))


def config_limits(key):
    """(lowest, highest) allowed for config key `key`; None for a key a command may not set."""
    for name, lim in _CONFIG_LIMITS:
        if name == key:
            return lim
    return None


COMMAND_TTL = const(60)  # s: a signed command is valid from exp - COMMAND_TTL to exp
SIGNED_COMMANDS = ("open", "mode", "time", "config", "keys")  # need a MAC; "patrol" does not


def ack_signing_bytes(device_id, boot, upto):
    """What an ack's MAC covers: the device, its boot (u16) and the sequence number."""
    return b"door-ack/v1|" + prefixed(device_id) + b"%d|%d" % (boot, upto)


def time_signing_bytes(device_id, nonce, epoch_ms):
    """What a signed time's MAC covers (docs/protocol.md, "Time sync"): the door, the nonce
    it announced on this connection and the time, length-prefixed."""
    return b"door-time/v1|" + prefixed(device_id) + prefixed(nonce) + b"%d" % epoch_ms


# -- whitelist updates (platform -> device), binary ---------------------------------------
# "DWU2" | version u32 | total u32 | offset u32 | tag (16) | bytes of the signed cache file
# The tag authenticates each piece on its own (the file's own tag comes only at its end), so
# the door checks the file's header (site, version, length) before it writes a byte, and stops
# at the first piece that is not the platform's (docs/protocol.md, "Whitelist updates").
CACHE_MAGIC = b"DWU2"
CACHE_TAG = const(16)
CACHE_HDR = const(16 + CACHE_TAG)
CACHE_CHUNK = const(1024)  # bytes per message the platform sends: the door's kept receive buffer
CACHE_CHUNK_MAX = const(2048)  # the largest piece a door takes (what platforms sent before 1 KiB)
CACHE_MAX_FILE = const(4 * 1024 * 1024)


def cache_chunk_tag(key, version, total, offset, data):
    """HMAC-SHA256 with the site's cache key over "door-cache-chunk/v1|", the three numbers
    (u32 BE) and the piece, cut to 16 bytes."""
    import struct

    from crypto.hmac256 import hmac_sha256

    head = b"door-cache-chunk/v1|" + struct.pack(">III", version, total, offset)
    return hmac_sha256(key, head, data)[:CACHE_TAG]


def command_signing_parts(device_id, cmd_id, op, args, expires):
    """What a command's MAC covers (docs/protocol.md), in pieces: device, id, op, expiry and
    the arguments in sorted key order, each length-prefixed so no field can bleed into
    another. Argument values are strings, integers or booleans. A door feeds the pieces to
    its HMAC one by one: a long argument (a sealed key file) is never copied into one message
    in a busy heap."""
    yield b"door-cmd/v1|" + prefixed(device_id) + prefixed(cmd_id) + prefixed(op) + b"%d|" % expires
    for k in sorted(args):
        v = args[k]
        if isinstance(v, bool):
            yield prefixed(k) + prefixed(b"b" + (b"1" if v else b"0"))
        elif isinstance(v, int):
            yield prefixed(k) + prefixed(b"i%d" % v)
        elif isinstance(v, str):
            b = v.encode()
            yield prefixed(k) + b"%d:s" % (len(b) + 1)
            yield b
        else:
            raise ProtocolError("bad_field", "args")
