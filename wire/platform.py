"""Protocol v1, the platform's side: what only the platform encodes (acks, resend requests,
time, commands, whitelist pieces) and decodes (events, presence, registration, status,
whitelist state, replies). Device code never imports this module: it stays out of the door's
heap. Shared parts are in wire/common.py (docs/protocol.md)."""

from wire.common import (
    CACHE_MAGIC,
    CARD_PROFILES,
    CONTENT_HASH_LEN,
    E_ARG,
    E_BOOT,
    E_CODE,
    E_DATA,
    E_FLAGS,
    E_MS,
    E_SEQ,
    E_TIME,
    LOCKS,
    MAX_BATCH,
    NONCE_LEN,
    VERSION,
    ProtocolError,
    cache_chunk_tag,
    command_signing_parts,
    dumps,
    get_int,
    get_str,
    limit,
    loads,
)


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
    obj = loads(payload)
    boot = get_int(obj, "boot", 0, 0xFFFF)
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


def encode_ack(upto, boot=None, mac=""):
    """The platform has durably stored every event of this device up to `upto`. `mac`: hex
    HMAC-SHA256 of ack_signing_bytes with the site's `command` key, for the door's `boot`."""
    obj = {"v": VERSION, "upto": upto}
    if boot is not None:
        obj["boot"] = boot
    if mac:
        obj["mac"] = mac
    return dumps(obj)


def encode_resend(first, last):
    """Send events first..last again: the platform holds the events after them, not these."""
    return dumps({"v": VERSION, "from": first, "to": last})


def decode_presence(payload):
    obj = loads(payload, limit("presence"))
    if not isinstance(obj.get("online"), bool):
        raise ProtocolError("bad_field", "online")
    if "nonce" in obj:
        n = obj["nonce"]
        if not isinstance(n, str) or len(n) != NONCE_LEN or [c for c in n if c not in "0123456789abcdef"]:
            raise ProtocolError("bad_field", "nonce")
    return obj


def decode_register(payload):
    obj = loads(payload)
    get_int(obj, "site")
    get_int(obj, "door", 0, 15)
    get_str(obj, "fw", 32)
    get_int(obj, "commissioned_at")
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


def decode_status(payload):
    obj = loads(payload)
    get_int(obj, "seq", 0)
    return obj


def encode_time(epoch_ms):
    return dumps({"v": VERSION, "t": epoch_ms})


def encode_signed_time(epoch_ms, nonce, mac):
    return dumps({"v": VERSION, "t": epoch_ms, "nonce": nonce, "mac": mac})


def encode_command(cmd_id, op, args=None, expires=0, mac=""):
    obj = {"v": VERSION, "id": cmd_id, "op": op}
    if args:
        obj["args"] = args
    if expires:
        obj["exp"] = expires
    if mac:
        obj["mac"] = mac
    return dumps(obj)


def encode_cache_chunk(version, total, offset, data, key):
    import struct

    tag = cache_chunk_tag(key, version, total, offset, data)
    return CACHE_MAGIC + struct.pack(">III", version, total, offset) + tag + bytes(data)


def decode_cache_state(payload):
    obj = loads(payload)
    get_int(obj, "version")
    get_int(obj, "receiving")
    get_int(obj, "have")
    if "reason" in obj:
        get_str(obj, "reason", 32)
    if "hash" in obj:
        h = obj["hash"]
        if not isinstance(h, str) or len(h) != CONTENT_HASH_LEN:
            raise ProtocolError("bad_field", "hash")
        for c in h:
            if c not in "0123456789abcdef":
                raise ProtocolError("bad_field", "hash")
    return obj


def command_signing_bytes(device_id, cmd_id, op, args, expires):
    """command_signing_parts in one piece (the platform's side)."""
    return b"".join(command_signing_parts(device_id, cmd_id, op, args, expires))


def decode_reply(payload):
    obj = loads(payload)
    get_str(obj, "id", 40)
    if not isinstance(obj.get("ok"), bool):
        raise ProtocolError("bad_field", "ok")
    return obj
