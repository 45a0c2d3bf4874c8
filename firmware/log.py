"""The device's own log: a small RAM ring for `doorctl logs`, echoed to the console.

Never pass key material or card secrets to `log`: the log leaves the device.
The console echo can be switched off (the virtual device does so while its raw REPL
is in use, so log lines do not corrupt the REPL protocol).

The ring is bounded by its text, not by a count of lines: a door that has run a while keeps
at most RING_CHARS of it (64 lines were up to 5 KiB of heap once full), and one that has
logged little holds little.
"""

RING_CHARS = 1024  # about 20 lines of 50 characters; the last line is always kept
_ring = []
_held = [0]  # characters in _ring
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
    _held[0] += len(line)
    while _held[0] > RING_CHARS and len(_ring) > 1:
        _held[0] -= len(_ring.pop(0))
    if _console[0]:
        print(line)


def lines():
    """The retained log lines, oldest first."""
    return list(_ring)
