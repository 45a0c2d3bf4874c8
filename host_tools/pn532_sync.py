"""The blocking PN532 driver over card_reader/pn532.py's I/O-free Core: for the host tools, the
bench and the tests (MicroPython code, so the shared tests run it on both interpreters). The
door itself only uses AsyncPN532; this module is neither frozen nor deployed.

  PN532(stream)     blocking driver: stream.write(buf), stream.read(n, timeout_ms)
  PollStream(obj)   that blocking stream over a machine.UART or a socket
"""

from card_reader.pn532 import E_NOT_CONNECTED, IO_READ, IO_WRITE, Core, PN532Error


def _run_sync(gen, stream):
    """Drive a Core generator with a blocking stream."""
    value = None
    try:
        while True:
            req = gen.send(value)
            value = None
            op = req[0]
            if op == IO_WRITE:
                buf = req[1]
                n = req[2]
                stream.write(buf if n == len(buf) else memoryview(buf)[:n])
            elif op == IO_READ:
                value = stream.read(64, req[1])
            else:
                flush = getattr(stream, "reset_input", None)
                if flush is not None:
                    flush()
    except StopIteration as e:
        return e.value
    except PN532Error:
        raise
    except (OSError, ValueError) as e:  # the link itself failed
        raise PN532Error(E_NOT_CONNECTED, 0) from e


class PN532:
    """Blocking driver: stream.write(buf); stream.read(n, timeout_ms) -> bytes (b"" on
    timeout, None when closed); optional stream.reset_input()."""

    def __init__(self, stream, ack_timeout_ms=50, retries=2, clock=None):
        self.stream = stream
        self.core = Core(ack_timeout_ms, retries, clock)

    def begin(self):
        """Wake the PN532, put it in normal mode; returns (IC, Ver, Rev, Support)."""
        _run_sync(self.core.wake(), self.stream)
        _run_sync(self.core.sam_configuration(), self.stream)
        _run_sync(self.core.rf_retries(), self.stream)
        return _run_sync(self.core.firmware_version(), self.stream)

    def firmware_version(self):
        return _run_sync(self.core.firmware_version(), self.stream)

    def list_target(self, timeout_ms=1000, max_targets=2):
        return _run_sync(self.core.list_target(timeout_ms, max_targets), self.stream)

    def wait_target(self, wait_ms, max_targets=2, renew_ms=0):
        return _run_sync(self.core.wait_target(wait_ms, max_targets, renew_ms), self.stream)

    def abort(self):
        return _run_sync(self.core.abort(), self.stream)

    def rf_retries(self, passive):
        return _run_sync(self.core.rf_retries(passive), self.stream)

    def exchange(self, apdu, timeout_ms=1000):
        return _run_sync(self.core.exchange(apdu, timeout_ms), self.stream)

    def transceive(self, apdu):
        """The card session's `transceive(apdu) -> response` callable."""
        return self.exchange(apdu)

    def release(self):
        return _run_sync(self.core.release(), self.stream)


class PollStream:
    """The blocking stream PN532 wants, over any pollable object with non-blocking reads:
    a machine.UART (timeout=0), a socket. For a card step that must call the reader
    synchronously (e.g. a transceive callable); it blocks the caller for each wait."""

    def __init__(self, obj):
        import select

        self.obj = obj
        self._poll = select.poll()
        self._poll.register(obj, select.POLLIN)
        self._hup = select.POLLHUP | select.POLLERR
        self._write = getattr(obj, "sendall", None) or obj.write
        self._read = getattr(obj, "recv", None) or obj.read

    def write(self, buf):
        self._write(buf)
        return len(buf)

    def read(self, n, timeout_ms):
        ev = self._poll.poll(max(0, timeout_ms))
        if not ev:
            return b""
        data = self._read(n)
        if data is None:
            return b""
        if not data:
            return None  # closed
        return data

    def reset_input(self):
        for _ in range(64):
            ev = self._poll.poll(0)
            if not ev or ev[0][1] & self._hup:
                return
            data = self._read(64)
            if not data:
                return
