"""The device's own log: a small RAM ring for `doorctl logs`, echoed to the console.

Never pass key material or card secrets to `log`: the log leaves the device.
The console echo can be switched off (the virtual device does so while its raw REPL
is in use, so log lines do not corrupt the REPL protocol).

The ring is bounded by its text, not by a count of lines: a door that has run a while keeps
at most RING_CHARS of it (64 lines were up to 5 KiB of heap once full), and one that has
logged little holds little. Its text lives in one buffer made at import, early in boot, not
as a string per line: strings kept for as long as a line stays in the ring were made at any
moment and held holes apart in the part of the heap the door's work churns (the image's
workload failed on a fragmented heap, docs/architecture.md).
"""

RING_CHARS = 256  # about 5 lines of 50 characters, their ends included; the last line is always kept
_END = 0  # a line's end in the buffer (a NUL in a line is kept as "?")
_buf = bytearray(RING_CHARS)
_held = [0]  # bytes of _buf in use: whole lines, each followed by _END
_long = [None]  # the last line when it is longer than the ring: kept alone, as a string
_console = [True]
_dropped = [0]
_clock = [None]


def set_console(on):
    _console[0] = bool(on)


def set_clock(clock):
    _clock[0] = clock


def _keep(line):
    data = line.encode()
    if b"\0" in data:  # a broker's topic or a reader's text can hold one: it would end the line
        data = data.replace(b"\0", b"?")
    n = len(data) + 1
    if n > RING_CHARS:
        _held[0] = 0
        _long[0] = line
        return
    _long[0] = None
    buf = _buf
    held = _held[0]
    if held + n > RING_CHARS:  # the oldest lines go, whole, until this one fits
        cut = 0
        while held - cut + n > RING_CHARS:
            while buf[cut] != _END:
                cut += 1
            cut += 1
        mv = memoryview(buf)
        mv[:held - cut] = mv[cut:held]  # a memmove: nothing allocated
        held -= cut
    buf[held:held + n - 1] = data
    buf[held + n - 1] = _END
    _held[0] = held + n


def log(*parts):
    """One line into the ring and onto the console. A line that finds no heap is dropped and
    counted (`dropped()`): a failure is when the heap is short, and a MemoryError out of a
    task's error handling ended every task of the firmware."""
    try:
        clock = _clock[0]
        stamp = clock.ticks_ms() if clock is not None else 0
        line = "%d %s" % (stamp, " ".join(str(p) for p in parts))
        _keep(line)
        if _console[0]:
            print(line)
    except MemoryError:
        _dropped[0] += 1


def dropped():
    """Lines dropped for want of heap since boot."""
    return _dropped[0]


def clear():
    """Forget every retained line."""
    _held[0] = 0
    _long[0] = None


def lines():
    """The retained log lines, oldest first."""
    if _long[0] is not None:
        return [_long[0]]
    out = []
    buf = _buf
    start = 0
    for i in range(_held[0]):
        if buf[i] == _END:
            out.append(str(buf[start:i], "utf-8"))
            start = i + 1
    return out
