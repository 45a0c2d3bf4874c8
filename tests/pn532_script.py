# A scripted PN532 for the driver's tests on both interpreters: a hand-moved clock
# (tests/clock.py) stands in for time, and the chip answers each information frame from a
# list of byte strings.
from card_reader import pn532 as p
from host_tools.pn532_sync import PN532
from tests.clock import ManualClock


def h(s):
    return bytes.fromhex(s.replace(" ", ""))


class Script:
    """A PN532 stand-in that answers each information frame from a list of replies."""

    def __init__(self, clock, replies):
        self.clock = clock
        self.replies = list(replies)
        self.rx = b""
        self.sent = []
        self.flushes = 0

    def write(self, buf):
        data = bytes(buf)
        self.sent.append(data)
        if data.startswith(b"\x55\x55"):  # the wake-up preamble: no frame to answer
            return len(data)
        if self.replies:
            self.rx += self.replies.pop(0)
        return len(data)

    def read(self, n, timeout_ms):
        if not self.rx:
            self.clock.t += timeout_ms
            return b""
        out = self.rx[:n]
        self.rx = self.rx[n:]
        return out

    def reset_input(self):
        self.flushes += 1
        self.rx = b""


def resp(data):
    return p.ACK + p.encode_frame(p.TFI_PN532, data)


def driver(replies):
    clock = ManualClock()
    script = Script(clock, replies)
    return PN532(script, clock=clock), script


def expect_error(fn, code):
    try:
        fn()
    except p.PN532Error as e:
        assert e.code == code, (e.code, code)
        return e
    raise AssertionError("no error")
