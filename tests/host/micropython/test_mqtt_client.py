"""The door's MQTT client (firmware/mqtt.py) on MicroPython against a scripted broker on
loopback: packets a real broker would send in an awkward order, or a hostile one would craft."""

from __future__ import annotations

import socket
import struct
import subprocess
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

from host_tools.paths import REPO_ROOT, micropython, micropython_env

CLIENT = textwrap.dedent("""
    import asyncio, sys
    from firmware.mqtt import MQTTClient, MQTTError

    port, keepalive, scenario = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    c = None
    got = []

    refused = []

    async def handler(topic, payload, retained):
        if payload[:4] == b"boom":
            raise MemoryError("the handler ran out of heap")
        got.append(topic)
        if scenario == "reply":  # a command's reply, sent from inside the read loop
            await c.publish("door/v1/d/reply", b"ok", 1)
            print("REPLIED")

    def on_message(topic, payload, retained):
        return handler(topic, payload, retained)

    async def main():
        global c
        c = MQTTClient("d", "127.0.0.1", port, keepalive=keepalive, on_message=on_message,
                       limit_for=lambda t: 1024 if t.endswith("/cmd") else 256,
                       on_refused=lambda reason, t: refused.append(reason + " " + t))
        await c.connect()
        if scenario == "reply":
            for i in range(8):  # the window is full of event batches
                await c.publish("door/v1/d/events", b"batch%d" % i, 1)
        if scenario == "wait":
            await c.publish("door/v1/d/events", b"batch", 1)
            try:
                await c.wait_published(5000)
                print("PUBLISHED")
            except MQTTError as e:
                print("NOT_PUBLISHED", e)
        for _ in range(30):
            await asyncio.sleep_ms(100)
        print("CONNECTED", c.connected, "GOT", got, "DROPPED", c.dropped_oversize, "REFUSED", refused)
        await c.close()

    asyncio.run(main())
""")


def _vi(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _pkt(first: int, body: bytes) -> bytes:
    return bytes([first]) + _vi(len(body)) + body


def _s16(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def _read_pkt(c: socket.socket) -> tuple[int, bytes]:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            d = c.recv(n - len(buf))
            if not d:
                raise EOFError
            buf += d
        return buf

    first = exact(1)[0]
    n = shift = 0
    while True:
        b = exact(1)[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return first, exact(n)


def _publish_pid(body: bytes) -> int:
    tl = struct.unpack("!H", body[:2])[0]
    return int(struct.unpack("!H", body[2 + tl:4 + tl])[0])


def run(tmp_path: Path, scenario: str, script: Callable[[socket.socket, list[str]], None],
        keepalive: int = 4, heap: str = "96K") -> tuple[str, list[str]]:
    """Run the client on MicroPython against `script` (the broker's side after CONNACK);
    returns the client's output and what the broker saw."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(20)
    seen: list[str] = []

    def broker() -> None:
        try:
            c, _ = srv.accept()
            c.settimeout(10)
            _read_pkt(c)  # CONNECT
            c.sendall(bytes([0x20, 2, 0, 0]))
            script(c, seen)
            while True:  # then answer pings and acknowledge publishes until the client goes
                first, body = _read_pkt(c)
                if first == 0xC0:
                    c.sendall(bytes([0xD0, 0]))
                elif first == 0x40:
                    seen.append("PUBACK %d" % struct.unpack("!H", body)[0])
                elif first & 0xF0 == 0x30:
                    seen.append("PUBLISH " + body[2:2 + struct.unpack("!H", body[:2])[0]].decode())
                    c.sendall(_pkt(0x40, struct.pack("!H", _publish_pid(body))))
        except (EOFError, OSError):
            pass
        finally:
            srv.close()

    t = threading.Thread(target=broker, daemon=True)
    t.start()
    prog = tmp_path / "client.py"
    prog.write_text(CLIENT)
    out = subprocess.run([micropython(), "-X", f"heapsize={heap}", str(prog), str(srv.getsockname()[1]),
                          str(keepalive), scenario], capture_output=True, text=True, timeout=60,
                         env=micropython_env(REPO_ROOT), cwd=tmp_path)
    t.join(5)
    return out.stdout + out.stderr, seen


def test_a_handler_replies_while_the_window_is_full(tmp_path: Path) -> None:
    # Eight batches wait for their PUBACKs; a command arrives before them. Its handler's
    # reply must go out (the PUBACKs behind it can only be read after it returns).
    def script(c: socket.socket, seen: list[str]) -> None:
        pids = []
        while len(pids) < 8:
            first, body = _read_pkt(c)
            if first & 0xF0 == 0x30:
                pids.append(_publish_pid(body))
        c.sendall(_pkt(0x32, _s16(b"door/v1/d/cmd") + struct.pack("!H", 77) + b"open"))
        for p in pids:
            c.sendall(_pkt(0x40, struct.pack("!H", p)))

    out, seen = run(tmp_path, "reply", script)
    assert "REPLIED" in out and "CONNECTED True" in out, out
    assert "PUBLISH door/v1/d/reply" in seen


def test_an_overlong_topic_is_skipped_and_the_stream_stays_in_step(tmp_path: Path) -> None:
    def script(c: socket.socket, seen: list[str]) -> None:
        c.sendall(_pkt(0x32, _s16(b"x" * 60000) + struct.pack("!H", 5) + b"p"))
        c.sendall(_pkt(0x30, _s16(b"door/v1/d/time") + b"{}"))

    out, _ = run(tmp_path, "listen", script, heap="96K")
    assert "CONNECTED True" in out and "DROPPED 1" in out, out
    assert "door/v1/d/time" in out


def test_keepalive_zero_means_no_keepalive(tmp_path: Path) -> None:
    out, _ = run(tmp_path, "listen", lambda c, seen: None, keepalive=0)
    assert "CONNECTED True" in out, out


def test_waiting_for_a_puback_fails_when_the_connection_drops(tmp_path: Path) -> None:
    def script(c: socket.socket, seen: list[str]) -> None:
        _read_pkt(c)  # the batch
        c.close()  # gone without a PUBACK

    out, _ = run(tmp_path, "wait", script)
    assert "NOT_PUBLISHED" in out and "PUBLISHED\n" not in out, out


def test_an_oversized_message_is_dropped_in_pieces_and_a_failing_handler_costs_its_message_only(
        tmp_path: Path) -> None:
    # 120 KB on a topic whose limit is 1 KiB (in a 96 KiB heap: never held), then a message
    # whose handler runs out of memory, then a good one: both bad ones are refused and acked,
    # the connection stays up and the good one arrives.
    def script(c: socket.socket, seen: list[str]) -> None:
        c.sendall(_pkt(0x32, _s16(b"door/v1/d/cmd") + struct.pack("!H", 9) + b"x" * 120000))
        c.sendall(_pkt(0x32, _s16(b"door/v1/d/cmd") + struct.pack("!H", 10) + b"boom"))
        c.sendall(_pkt(0x30, _s16(b"door/v1/d/time") + b"{}"))

    out, seen = run(tmp_path, "listen", script)
    assert "CONNECTED True" in out and "GOT ['door/v1/d/time']" in out, out
    assert "REFUSED ['too_large door/v1/d/cmd', 'no_memory door/v1/d/cmd']" in out, out
    assert "PUBACK 9" in seen and "PUBACK 10" in seen
