"""The device's own log: a small RAM ring for `doorctl logs`, echoed to the console.

Never pass key material or card secrets to `log`: the log leaves the device.
The console echo can be switched off (the virtual device does so while its raw REPL
is in use, so log lines do not corrupt the REPL protocol).
"""

_RING_SIZE = 64
_ring = []
_console = [True]
_clock = [None]


def set_console(on):
    _console[0] = bool(on)


def set_clock(clock):
    _clock[0] = clock


def log(*parts):
    clock = _clock[0]
    stamp = clock.ticks_ms() if clock is not None else 0
    line = "%d %s" % (stamp, " ".join(str(p) for p in parts))
    _ring.append(line)
    if len(_ring) > _RING_SIZE:
        _ring.pop(0)
    if _console[0]:
        print(line)


def lines():
    """The retained log lines, oldest first."""
    return list(_ring)
