"""Named console calls: what the host may ask a running door over its REPL.

The host (host_tools/console.py `call`) runs `import firmware.console as c` and one call,
with simple values as arguments; each call prints one line, `CALL ` and a JSON value, so the
host parses one format and never reaches into the firmware's internals. The host's program
imports the module for the call and drops it afterwards, so the door's heap does not keep it.
"""

import json


def _answer(value):
    print("CALL", json.dumps(value))


def _running():
    from firmware.main import running

    return running


def status():
    """The firmware's own status (ready, heap, journal depth, cache version...)."""
    from firmware.main import status

    _answer(status)


def self_report():
    """What the door knows about itself, item by item, for `doorctl selftest`."""
    import os

    from firmware import VERSION
    from firmware.main import running, setup_now, status

    b = running.get("board")
    r = {"firmware": VERSION, "ready": status.get("ready"), "reader": status.get("reader"),
         "cards": status.get("cards"), "cache_version": status.get("cache_version")}
    r["clock"] = b.clock.time() if b else None
    try:
        s = os.statvfs(b.fs_root)
        r["flash_free"] = s[0] * s[3]
        r["flash_total"] = s[0] * s[2]
    except Exception:
        r["flash_free"] = None
    cfg = running.get("config") or {}
    r["device_id"] = cfg.get("device_id")
    ks = running.get("keystore")
    keys = []
    for k in ("door_read", "card_ref", "cache", "command"):
        if ks is not None and (ks.has(k) or (k == "door_read"
                                             and ks.read_slot(ks.key_version) is not None)):
            keys.append(k)
    r["keys"] = keys
    c = running.get("cache")
    r["cache_error"] = c.error if c is not None else "no cache key"
    r["site"] = cfg.get("site_id")
    r["key_site"] = ks.site_id if ks is not None else None
    r["setup"] = setup_now(b) if b else []
    u = running.get("uplink")
    bc = cfg.get("broker") or {}
    r["broker"] = cfg.get("broker") is not None
    r["connected"] = bool(u is not None and u.client is not None and u.client.connected)
    r["tls"] = bool(bc.get("ca") or bc.get("ssl"))
    r["client_cert"] = bool(bc.get("cert"))
    r["uplink_error"] = getattr(u, "last_error", "")
    r["tls_failures"] = getattr(u, "tls_failures", 0)
    j = running.get("journal")
    r["journal"] = [j.depth(), j.capacity, j.acked] if j is not None else None
    d = running.get("door")
    if d is not None:
        m = d.machine
        r["door"] = m.door_state()
        r["alarms"] = m.active_alarms()
        r["mode"] = m.effective_mode()
        r["inputs"] = {x[0]: x[1].read() for x in d.sources}
    _answer(r)


def log_lines(n=0):
    """The last `n` log lines (all when 0) as [age ms, stamp, text], and the door's clock, so
    the host can print wall-clock times."""
    from firmware.log import lines

    b = _running().get("board")
    now = b.clock.ticks_ms() if b else 0
    out = []
    for x in lines()[-n:] if n else lines():
        s, _, text = x.partition(" ")
        try:
            age = b.clock.ticks_diff(now, int(s)) if b else 0
        except ValueError:
            age = 0
        out.append([age, s, text])
    _answer({"now": b.clock.time() if b else None, "lines": out})


def relay_test(ms):
    """Pulse the lock relay for `ms` milliseconds, then leave it as it was."""
    import time

    rel = _running()["board"].relay
    v = rel.value()
    rel.set(not v)
    time.sleep_ms(ms)
    rel.set(v)
    _answer(ms)


def set_time(epoch_s):
    """Set the board's clock (seconds since the epoch), as a bench does before measuring."""
    _running()["board"].clock.set_time(epoch_s)
    _answer(epoch_s)


def record_events(n, code, arg=0):
    """Record `n` events into the journal (a backlog for the uplink to drain)."""
    r = _running()["recorder"]
    for _ in range(n):
        r.record(code, arg)
    _answer(n)


def wipe_journal():
    """Erase the journal's raw partition (block protocol: ioctl 4 = block count, 6 = erase),
    answer, then keep the console busy, which keeps the firmware's loop (and so its journal)
    still until the power goes: the next boot finds an empty journal, as on a new board."""
    import time

    d = _running()["board"].journal_dev
    for blk in range(d.ioctl(4, 0)):
        d.ioctl(6, blk)
    _answer("wiped")
    while True:
        time.sleep_ms(50)
