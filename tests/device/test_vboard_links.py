# On the unix32 image: the virtual board's host links in C (board/unix32/cmodules/vboard/
# modlinks.c), driven in this process through real loopback sockets: the limits a host cannot
# reach through a running door in reasonable time (a client that never reads, an endless line,
# one client too many), a request that fails, the pins. The protocol itself is tested through
# a running door on both images (tests/host/vdev/test_virtual_device.py). Without the C types
# (any other interpreter) the file holds no test.
import json
import socket
import time

try:
    from vboard import IOHub, ReaderLink
except ImportError:
    IOHub = ReaderLink = None

SOL_SOCKET = 1  # Linux's numbers: the unix port's socket module does not name them all
SO_RCVBUF = 8


def _listening(make):
    """A link on a free port: tries ports until one binds (a parallel run may hold one)."""
    port = 47100 + (time.ticks_ms() % 800) * 8
    for k in range(40):
        try:
            return make(port + k), port + k
        except OSError:
            continue
    raise AssertionError("no free port")


def _connect(port, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(SOL_SOCKET, SO_RCVBUF, rcvbuf)
    s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    return s


def _recv_all(s, settle_ms=300):
    """Everything the socket gives until it is quiet (or closed) for settle_ms."""
    import select

    p = select.poll()
    p.register(s, select.POLLIN)
    got = b""
    while p.poll(settle_ms):
        try:
            chunk = s.recv(2048)
        except OSError:  # ECONNRESET: closed by the far end with our bytes unread
            break
        if not chunk:
            break
        got += chunk
    return got


def _hub_with_client():
    """A hub and one client it has taken."""
    hub, port = _listening(IOHub)
    s = _connect(port)
    hub.serve()
    return hub, s


def _closed(s):
    """True when the far end closed the socket (an end of stream or a reset within 2 s); a
    socket merely quiet is not closed."""
    import select

    p = select.poll()
    p.register(s, select.POLLIN)
    if not p.poll(2000):
        return False
    try:
        return s.recv(64) == b""
    except OSError:
        return True


def _beyond_socket_buffers():
    """Twice what the kernel may buffer on a TCP sender (tcp_wmem's maximum), in bytes."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return 2 * int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 8 * 1024 * 1024


def _ask(hub, s, line):
    s.send(line + b"\n")
    time.sleep_ms(30)
    hub.serve()
    return json.loads(_recv_all(s, 100).decode().split("\n")[-2])


if IOHub is not None:

    def test_a_client_that_never_reads_loses_its_oldest_notifications_whole():
        hub, port = _listening(IOHub)
        s = _connect(port, rcvbuf=4096)
        hub.serve()  # accepted
        assert hub.clients() == 1
        relay = hub.pin("relay")
        sent = _beyond_socket_buffers() // 60  # lines of ~70 bytes
        for i in range(sent):
            relay.set(i % 2 == 0)
        import select

        poller = select.poll()
        poller.register(s, select.POLLIN)
        count, last, rest = 0, None, b""
        while True:
            hub.serve()  # sends what the socket takes again
            if not poller.poll(200):
                break
            rest += s.recv(2048)
            *whole, rest = rest.split(b"\n")
            for x in whole:
                last = json.loads(x)  # every line whole
                assert last["ev"] == "out" and last["name"] == "relay"
                count += 1
        assert rest == b"" and 0 < count < sent, count
        assert last["value"] is ((sent - 1) % 2 == 0)  # the newest is kept
        s.close()
        hub.close()

    def test_a_request_line_longer_than_4_kib_ends_only_that_client():
        hub, port = _listening(IOHub)
        good, bad = _connect(port), _connect(port)
        hub.serve()
        bad.send(b'{"op": "get", "pad": "' + b"x" * 5000 + b'"}\n')
        time.sleep_ms(30)
        hub.serve()
        assert _closed(bad)  # nothing answered
        assert hub.clients() == 1
        assert _ask(hub, good, b'{"op": "get"}')["ok"] is True
        good.close()
        bad.close()
        hub.close()

    def test_eight_clients_are_served_and_a_ninth_is_closed():
        hub, port = _listening(IOHub)
        clients = [_connect(port) for _ in range(9)]
        hub.serve()
        assert hub.clients() == 8
        assert _closed(clients[8])
        for s in clients[:8]:
            assert _ask(hub, s, b'{"op": "get"}')["outputs"]["led"] == "off"
        clients[0].close()
        time.sleep_ms(30)
        hub.serve()
        assert hub.clients() == 7
        again = _connect(port)
        hub.serve()
        assert hub.clients() == 8 and _ask(hub, again, b'{"op": "get"}')["ok"] is True
        for s in clients + [again]:
            s.close()
        hub.close()

    def test_a_failing_status_is_answered_by_its_error_and_the_channel_carries_on():
        hub, s = _hub_with_client()
        hub.status_provider = lambda: 1 // 0
        assert _ask(hub, s, b'{"op": "status"}') == {"ok": False, "error": "ZeroDivisionError",
                                                    "re": True}
        hub.status_provider = lambda: {"ready": True, "n": [1, 2], "none": None}
        assert _ask(hub, s, b'{"op": "status"}')["status"] == {"ready": True, "n": [1, 2],
                                                               "none": None}
        assert _ask(hub, s, b'{"op": "status", "keys": ["n", "x"]}')["status"] == {"n": [1, 2]}
        assert _ask(hub, s, b"[1, 2]") == {"ok": False, "re": True}
        assert _ask(hub, s, b"{") == {"ok": False, "error": "not JSON", "re": True}
        assert _ask(hub, s, b'{"op": "set", "name": [1], "value": true}')["error"] == \
            "unknown input [1]"
        s.close()
        hub.close()

    def test_pins_read_the_host_inputs_and_notify_output_changes_only():
        hub, s = _hub_with_client()
        contact, led = hub.pin("door_contact"), hub.pin("led")
        assert contact.read() == "closed" and hub.pin("power").read() is True
        reply = _ask(hub, s, b'{"op": "set", "name": "door_contact", "value": "short"}')
        assert reply["ok"] is True and contact.read() == "short"
        try:
            contact.set("open")
        except ValueError:
            pass
        else:
            raise AssertionError("an input was set by the firmware")
        try:
            hub.pin("volume")
        except ValueError:
            pass
        else:
            raise AssertionError("a pin that does not exist")
        led.set("red")
        led.set("red")
        led.set("green")
        hub.serve()
        got = [json.loads(x) for x in _recv_all(s).decode().split("\n") if x]
        assert [(m["name"], m["value"]) for m in got] == [("led", "red"), ("led", "green")]
        assert led.value() == "green"
        s.close()
        hub.close()

    def test_the_reader_link_keeps_one_emulator_and_carries_bytes_both_ways():
        link, port = _listening(ReaderLink)
        assert not link.connected() and link.write(b"lost") == 0
        first, second = _connect(port), _connect(port)
        assert link.connected()
        assert _closed(second)  # one emulator at a time
        first.send(b"\x00\x00\xff\x01")
        time.sleep_ms(30)
        assert link.any() == 4 and link.read(2) == b"\x00\x00" and link.read(8) == b"\xff\x01"
        assert link.read(8) is None  # nothing waits: asyncio polls again
        first.send(b"junk")
        time.sleep_ms(30)
        link.reset_input()
        assert link.any() == 0
        assert link.write(b"frame") == 5 and _recv_all(first, 200) == b"frame"
        first.close()
        time.sleep_ms(30)
        assert link.read(8) is None and not link.connected()
        third = _connect(port)
        assert link.connected()
        third.close()
        second.close()
        link.close()

    def test_a_new_emulator_replaces_one_that_closed_before_its_end_was_read():
        # The soak reconnects its emulator between rounds: the card task had not read the old
        # one's end when the new one came, and the new one was refused (no decision again).
        link, port = _listening(ReaderLink)
        first = _connect(port)
        assert link.connected()
        first.send(b"unread")
        first.close()
        time.sleep_ms(30)
        second = _connect(port)
        time.sleep_ms(30)
        assert link.connected()
        second.send(b"\x01")
        time.sleep_ms(30)
        assert link.read(8) == b"\x01"  # the new one's bytes, none of the old one's
        assert link.write(b"ok") == 2 and _recv_all(second, 200) == b"ok"
        second.close()
        link.close()

    def test_a_set_from_a_client_that_reset_its_connection_does_not_crash():
        import struct

        hub, s = _hub_with_client()
        s.send(b'{"op": "set", "name": "rex", "value": true}\n')
        s.setsockopt(SOL_SOCKET, 13, struct.pack("ii", 1, 0))  # SO_LINGER {1, 0}: an RST
        s.close()
        time.sleep_ms(30)
        hub.serve()  # the 'in' notification finds the socket reset: the client goes
        assert hub.clients() == 0 and hub.pin("rex").read() is True
        hub.close()

    def test_an_output_whose_print_fails_leaves_the_buffers_apart():
        class Bad:
            def __repr__(self):
                raise RuntimeError("no repr")

        hub, s = _hub_with_client()
        led = hub.pin("led")
        led.set("x" * 300)
        try:
            led.set(Bad())
        except RuntimeError:
            pass
        led.set("red")
        assert _ask(hub, s, b'{"op": "set", "name": "fire", "value": false}')["ok"] is True
        s.close()
        hub.close()  # a double free here aborts the process

    def test_serve_answers_a_bounded_number_of_lines_per_call():
        hub, s = _hub_with_client()
        s.send(b'{"op": "get"}\n' * 50)
        time.sleep_ms(30)
        assert hub.serve() is True  # more wait: the caller yields, then calls again
        calls = 1
        while hub.serve():
            calls += 1
        assert calls >= 2 and len([x for x in _recv_all(s).split(b"\n") if x]) == 50
        s.close()
        hub.close()

    def test_a_reply_over_32_kib_is_answered_by_its_error():
        hub, s = _hub_with_client()
        hub.status_provider = lambda: {"big": [12345678] * 4000}  # ~40 KB of JSON
        assert _ask(hub, s, b'{"op": "status"}') == {"ok": False, "error": "reply too long",
                                                    "re": True}
        s.close()
        hub.close()

    def test_status_keys_asked_twice_are_answered_once():
        hub, s = _hub_with_client()
        hub.status_provider = lambda: {"patrol": "p" * 300, "ready": True}
        keys = json.dumps({"op": "status", "keys": ["patrol"] * 400}).encode()
        s.send(keys + b"\n")
        time.sleep_ms(30)
        hub.serve()
        got = _recv_all(s)
        assert got.count(b"patrol") == 1, len(got)
        s.close()
        hub.close()

    def test_a_keyboard_interrupt_in_the_status_is_not_swallowed():
        hub, s = _hub_with_client()

        def interrupted():
            raise KeyboardInterrupt

        hub.status_provider = interrupted
        s.send(b'{"op": "status"}\n')
        time.sleep_ms(30)
        try:
            hub.serve()
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("KeyboardInterrupt answered as an error")
        hub.status_provider = None
        assert _ask(hub, s, b'{"op": "get"}')["ok"] is True  # the interrupted line is consumed
        s.close()
        hub.close()
