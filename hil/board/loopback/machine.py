# `machine` for the rig I/O board's firmware (hil/board/rig_io.py) when it runs in the unix
# port as the loopback bench's I/O board (hil/loopback.py): each Pin is a wire to the loopback's
# wiring shim on TCP 127.0.0.1:$RIG_WIRES_PORT instead of a GPIO.
#   board -> shim: "w <gp> <0|1>"  an output pin (a relay) was driven
#   shim -> board: "r <gp> <0|1>"  an input pin's level changed (a door output)
# Only the loopback uses this file; on the Pico, machine is MicroPython's own.
import os
import select
import socket

_link = []  # [socket, poll]
_levels = {}
_buf = [b""]
_inputs = []  # GPIO numbers of the input pins, to pace the board's busy loop


def _sock():
    if not _link:
        s = socket.socket()
        s.connect(socket.getaddrinfo("127.0.0.1", int(os.getenv("RIG_WIRES_PORT")))[0][-1])
        p = select.poll()
        p.register(s, select.POLLIN)
        _link.append(s)
        _link.append(p)
    return _link[0]


def _sync(wait_ms):
    s = _sock()
    while _link[1].poll(wait_ms):
        data = s.recv(256)
        if not data:
            raise SystemExit(0)  # the loopback ended: the board's power is gone
        _buf[0] += data
        while b"\n" in _buf[0]:
            line, _buf[0] = _buf[0].split(b"\n", 1)
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"r":
                _levels[int(parts[1])] = int(parts[2])
        wait_ms = 0


class Pin:
    IN = 0
    OUT = 1
    PULL_DOWN = 2

    def __init__(self, gp, mode=0, pull=None, value=None):
        self.gp = gp
        self.mode = mode
        if mode == Pin.IN:
            _inputs.append(gp)
        elif value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            # The first input pin waits up to 1 ms for news: the board's loop polls its pins
            # without pause, which on a Pico costs nothing but here would take a whole core.
            _sync(1 if self.gp == min(_inputs) else 0)
            return _levels.get(self.gp, 0)
        _sock().send(("w %d %d\n" % (self.gp, 1 if v else 0)).encode())
        return None
