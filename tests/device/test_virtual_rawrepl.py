# The virtual device's raw REPL and door I/O channel, byte by byte, under MicroPython.
import os

import board.vdev.rawrepl as rawrepl
from firmware import log

BANNER = "raw REPL; CTRL-B to exit\r\n>"


def _repl(busy_path=None):
    out = []
    rawrepl._out = out.append
    return rawrepl.RawRepl(busy_path=busy_path), out


def _text(out):
    s = "".join(out)
    del out[:]
    return s


def test_ctrl_a_enters_raw_mode_and_silences_the_log():
    repl, out = _repl()
    repl.feed(b"\r\x03\r\x01")
    assert _text(out).endswith(BANNER)
    assert repl.raw
    assert log._console[0] is False
    repl.feed(b"\x02")
    assert not repl.raw
    assert log._console[0] is True
    assert _text(out).endswith(">>> ")


def test_program_runs_with_the_raw_framing_and_keeps_its_namespace():
    repl, out = _repl()
    repl.feed(b"\x01")
    _text(out)
    repl.feed(b"x = 6 * 7\x04")
    assert _text(out) == "OK\x04\x04>"
    repl.feed(b"y = x + 1\x04")
    _text(out)
    assert repl.namespace["y"] == 43


def test_errors_go_to_the_error_section():
    repl, out = _repl()
    repl.feed(b"\x01")
    _text(out)
    repl.feed(b"1/0\x04")
    text = _text(out)
    # "OK" + "\x04" (end of output) + error text printed by print_exception + "\x04" + ">"
    assert text.startswith("OK\x04")
    assert text.endswith("\x04>")


def test_raw_paste_request_is_refused_and_the_program_still_runs():
    repl, out = _repl()
    repl.feed(b"\x01")
    _text(out)
    repl.feed(b"\x05A\x01")
    assert _text(out) == "R\x00"
    repl.feed(b"z = 5\x04")
    assert _text(out) == "OK\x04\x04>"
    assert repl.namespace["z"] == 5


def test_ctrl_c_mid_program_drops_it():
    repl, out = _repl()
    repl.feed(b"\x01")
    _text(out)
    repl.feed(b"never = 1\x03kept = 2\x04")
    assert "never" not in repl.namespace
    assert repl.namespace["kept"] == 2


def test_ctrl_b_mid_program_leaves_raw_mode_and_the_next_client_gets_in():
    repl, out = _repl()
    repl.feed(b"\x01half a progr\x02")
    assert not repl.raw
    _text(out)
    repl.feed(b"\r\x03\r\x01")
    assert _text(out).endswith(BANNER)
    repl.feed(b"a = 1\x04")
    assert _text(out) == "OK\x04\x04>"
    assert "half" not in repl.namespace


def test_ctrl_d_on_an_empty_program_is_a_soft_reset():
    repl, out = _repl()
    repl.feed(b"\x01old = 1\x04")
    _text(out)
    repl.feed(b"\x04")
    assert _text(out) == "soft reboot\r\n" + BANNER
    assert "old" not in repl.namespace


def test_ctrl_d_in_the_friendly_repl_asks_for_a_reboot():
    repl, out = _repl()
    try:
        repl.feed(b"\x04")
    except SystemExit as e:
        assert e.args[0] == rawrepl.REBOOT_EXIT
    else:
        raise AssertionError("no reboot")


def test_machine_reset_in_a_program_asks_for_a_reboot():
    repl, out = _repl()
    repl.feed(b"\x01")
    try:
        repl.feed(b"raise SystemExit(75)\x04")
    except SystemExit as e:
        assert e.args[0] == 75
    else:
        raise AssertionError("no reboot")
    assert _text(out).endswith("OK\x04\x04")


def test_sys_exit_ends_the_program_not_the_device():
    repl, out = _repl()
    repl.feed(b"\x01")
    _text(out)
    repl.feed(b"import sys\nsys.exit()\x04")
    assert _text(out) == "OK\x04\x04>"
    repl.feed(b"after = 1\x04")
    assert repl.namespace["after"] == 1


def test_busy_file_exists_only_while_a_program_runs():
    busy = os.getenv("MPY_TEST_TMP") + "/console.busy"
    repl, out = _repl(busy)
    repl.feed(b"\x01")
    repl.feed(("import os\nseen = os.stat(%r)[6] == 0\x04" % busy).encode())
    assert repl.namespace["seen"] is True
    try:
        os.stat(busy)
        raise AssertionError("busy file left behind")
    except OSError:
        pass


def test_sys_exit_in_the_friendly_repl_keeps_the_device():
    repl, out = _repl()
    repl.feed(b"import sys\rsys.exit(0)\r1 + 1\r")
    assert "2\r\n" in _text(out)


def test_friendly_repl_evaluates_a_line():
    repl, out = _repl()
    repl.feed(b"2 + 3\r")
    assert "5\r\n" in _text(out)


def _io():
    from board.virtual import Clock
    from board.vdev.pylinks import IOChannel

    io = IOChannel(Clock())
    box = []
    io.clients.append((None, box))
    return io, box


def test_io_channel_sets_inputs_and_checks_values():
    import json

    io, box = _io()
    assert io._handle({"op": "set", "name": "door_contact", "value": "cut"})["ok"]
    assert io.inputs["door_contact"] == "cut"
    assert json.loads(box[-1])["ev"] == "in"
    assert not io._handle({"op": "set", "name": "door_contact", "value": "ajar"})["ok"]
    assert not io._handle({"op": "set", "name": "rex", "value": 1})["ok"]
    assert not io._handle({"op": "set", "name": "volume", "value": True})["ok"]
    assert not io._handle({"op": "dance"})["ok"]


def test_io_channel_reports_only_output_changes():
    import json

    io, box = _io()
    io.set_output("relay", True)
    io.set_output("relay", True)
    io.set_output("led", "red")
    msgs = [json.loads(line) for line in box]
    assert [(m["name"], m["value"]) for m in msgs] == [("relay", True), ("led", "red")]
    assert all(m["ev"] == "out" and isinstance(m["t"], int) for m in msgs)


def test_io_channel_queue_drops_the_oldest_line_whole():
    import json

    from board.vdev import pylinks

    kept = pylinks.OUTBOX_MAX
    pylinks.OUTBOX_MAX = 8  # the test's heap: 256 lines would not fit 64K
    try:
        io, box = _io()
        box.append(io._answer(b'{"op": "get"}'))  # a reply: its text and its end, two entries
        box.append("\n")
        for i in range(7):
            io.set_output("buzzer", i % 2 == 0)
    finally:
        pylinks.OUTBOX_MAX = kept
    lines = "".join(box).split("\n")
    assert lines[-1] == "" and all(json.loads(x)["ev"] == "out" for x in lines[:-1])
    assert len(lines) - 1 == 7 and len(box) == 7  # the reply went, both its entries


def test_reader_uart_read_returns_buffered_bytes_or_times_out():
    import asyncio

    from board.vdev.pylinks import ReaderUART

    u = ReaderUART()

    async def go():
        assert await u.read(4, 20) == b""
        u.feed(b"\x00\x00\xff\x01\x02")
        first = await u.read(3, 20)
        rest = await u.read(10, 20)
        return first, rest

    assert asyncio.run(go()) == (b"\x00\x00\xff", b"\x01\x02")
    assert u.write(b"x") == 0  # no emulator connected: bytes are lost, like an open UART


def test_reader_uart_keeps_byte_order_across_its_buffer_end_and_drops_an_overrun():
    import asyncio

    from board.vdev.pylinks import RX_BYTES, ReaderUART

    # Both streams in blocks made first (about 1.6 KiB each): grown piece by piece they need
    # a 1.5 KiB contiguous block late, which a 64K heap on the 64-bit port may not have.
    sent = bytearray(1700)
    got = bytearray(1700)
    u = ReaderUART()
    n = [0, 0]  # bytes sent, bytes got

    def put(buf, which, data):
        buf[n[which]:n[which] + len(data)] = data
        n[which] += len(data)

    async def go():
        # Frames fed and read in uneven pieces: the buffer's tail reaches its end many times.
        for i in range(40):
            piece = bytes((i * 7 + k) & 0xFF for k in range(37 + i % 5))
            u.feed(piece)
            put(sent, 0, piece)
            put(got, 1, await u.read(29, 20))
        while u.any():
            put(got, 1, await u.read(64, 20))

    asyncio.run(go())
    assert n[0] == n[1] > 1500
    assert got == sent  # whole (both zero past n): slices would want 1.5 KiB blocks again
    u.feed(memoryview(sent)[:RX_BYTES])  # a view: no third 0.5 KiB block in a fragmented heap
    u.feed(b"\x01\x02")  # nobody read: the full buffer is dropped, the new bytes kept
    assert u.any() == 2
    u.reset_input()
    assert u.any() == 0
