"""The virtual reference device: a real MicroPython process driven by the unmodified mpremote
through its pty, door I/O on its loopback channel, and its reader UART stream."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.vdev.device import VirtualDevice, VirtualDeviceError, selected_image
from host_tools.vdev.io_client import IOChannelError, VirtualIO
from tests.reader_loan import BORROW_READER

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def mpremote(dev: VirtualDevice, *args: str, timeout: float = 30) -> str:
    proc = subprocess.run([MPREMOTE, "connect", dev.pty, *args], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def vdev(tmp_path: Path) -> Iterator[VirtualDevice]:
    with VirtualDevice(tmp_path / "dev", image=selected_image()) as d:
        yield d


def _served_again(addr: tuple[str, int]) -> None:
    """A client freed a place: a new one is answered once the device has seen the close (on
    its next wake)."""
    deadline = time.monotonic() + 10
    while True:
        again = VirtualIO(addr)
        try:
            assert again.state()["ok"] is True
            return
        except IOChannelError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        finally:
            again.close()

def test_mpremote_exec_runs_on_the_device(vdev: VirtualDevice) -> None:
    out = mpremote(vdev, "exec", "import sys, os; print(sys.implementation.name, os.getcwd())")
    assert out.split() == ["micropython", "/flash"]


def test_mpremote_errors_come_back_as_errors(vdev: VirtualDevice) -> None:
    proc = subprocess.run([MPREMOTE, "connect", vdev.pty, "exec", "1/0"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode != 0
    assert "ZeroDivisionError" in proc.stdout + proc.stderr


def test_fs_cp_and_sha256sum_match(vdev: VirtualDevice, tmp_path: Path) -> None:
    src = tmp_path / "payload.bin"
    data = bytes(range(256)) * 40
    src.write_bytes(data)
    mpremote(vdev, "fs", "mkdir", "data")
    mpremote(vdev, "fs", "cp", str(src), ":data/payload.bin")
    out = mpremote(vdev, "fs", "sha256sum", ":data/payload.bin")
    assert hashlib.sha256(data).hexdigest() in out
    back = tmp_path / "back.bin"
    mpremote(vdev, "fs", "cp", ":data/payload.bin", str(back))
    assert back.read_bytes() == data
    assert "payload.bin" in mpremote(vdev, "fs", "ls", "data")
    mpremote(vdev, "fs", "rm", ":data/payload.bin")
    mpremote(vdev, "fs", "rmdir", ":data")
    assert "data" not in mpremote(vdev, "fs", "ls")


def test_run_a_local_script(vdev: VirtualDevice, tmp_path: Path) -> None:
    script = tmp_path / "hello.py"
    script.write_text("print('sum', sum(range(10)))\n")
    assert "sum 45" in mpremote(vdev, "run", str(script))


def test_many_connections_in_a_row(vdev: VirtualDevice) -> None:
    for i in range(8):
        assert mpremote(vdev, "exec", f"print({i} * 3)").strip() == str(i * 3)


def test_firmware_log_lines_do_not_disturb_mpremote(vdev: VirtualDevice, tmp_path: Path) -> None:
    mpremote(vdev, "exec", "import asyncio\n"
             "from firmware.log import log\n"
             "async def chatter():\n"
             "    n = 0\n"
             "    while True:\n"
             "        n += 1\n"
             "        log('chatter', n)\n"
             "        await asyncio.sleep_ms(2)\n"
             "asyncio.create_task(chatter())")
    deadline = time.monotonic() + 20
    while b"chatter" not in vdev.console_log:  # the firmware logs on the console between commands
        assert time.monotonic() < deadline
        time.sleep(0.05)
    data = bytes(range(256)) * 8
    (tmp_path / "d.bin").write_bytes(data)
    for i in range(4):
        assert mpremote(vdev, "exec", f"print({i} + 100)").strip() == str(i + 100)
    mpremote(vdev, "fs", "cp", str(tmp_path / "d.bin"), ":d.bin")
    assert hashlib.sha256(data).hexdigest() in mpremote(vdev, "fs", "sha256sum", ":d.bin")


def test_soft_reset_gives_a_fresh_namespace(vdev: VirtualDevice) -> None:
    out = mpremote(vdev, "exec", "x = 41", "exec", "print(x + 1)")
    assert out.strip() == "42"
    out = mpremote(vdev, "exec", "x = 41", "soft-reset", "exec", "print('x' in globals())")
    assert out.strip() == "False"


def test_reset_reboots_the_process_on_the_same_pty(vdev: VirtualDevice) -> None:
    first = json.loads((vdev.state_dir / "ready.json").read_text())["boot"]
    mpremote(vdev, "exec", "with open('keep.txt', 'w') as f: f.write('kept')")
    mpremote(vdev, "reset")
    deadline = time.monotonic() + 20
    while vdev.boots < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    ready = vdev.wait_ready()
    assert ready["boot"] == first + 1
    assert mpremote(vdev, "exec", "print(open('keep.txt').read())").strip() == "kept"


def test_ctrl_c_interrupts_a_running_program(vdev: VirtualDevice) -> None:
    mpremote(vdev, "exec", "--no-follow", "while True: pass")
    deadline = time.monotonic() + 20
    while not (vdev.state_dir / "console.busy").exists():
        assert time.monotonic() < deadline, "the program never started"
        time.sleep(0.05)
    # mpremote starts with Ctrl-C, which interrupts the loop like on a USB board.
    assert mpremote(vdev, "exec", "print('alive')").strip() == "alive"
    assert b"KeyboardInterrupt" in vdev.console_log
    with VirtualIO(vdev.io_addr) as io:
        assert io.status()["ready"] is True
    assert mpremote(vdev, "exec", "print(1 + 1)").strip() == "2"


def test_raw_paste_refused_cleanly(vdev: VirtualDevice) -> None:
    # mpremote asks for raw-paste on every connection; a plain exchange checks the reply bytes.
    import os
    import tty

    fd = os.open(vdev.pty, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    try:
        def read_until(marker: bytes, timeout: float = 10) -> bytes:
            buf = b""
            deadline = time.monotonic() + timeout
            while not buf.endswith(marker):
                assert time.monotonic() < deadline, buf
                buf += os.read(fd, 1)
            return buf

        os.write(fd, b"\r\x03\x03\r\x01")
        read_until(b"raw REPL; CTRL-B to exit\r\n>")
        os.write(fd, b"\x05A\x01")
        assert read_until(b"R\x00").endswith(b"R\x00")
        os.write(fd, b"print('after')\x04")
        assert read_until(b"\x04>").startswith(b"OKafter")
        os.write(fd, b"junk that is never run\x03print('clean')\x04")
        assert b"clean" in read_until(b"\x04>")
        os.write(fd, b"\r\x02")
    finally:
        os.close(fd)


def test_io_channel_inputs_reach_the_board(vdev: VirtualDevice) -> None:
    with VirtualIO(vdev.io_addr) as io:
        io.set_input("door_contact", "open")
        io.set_input("rex", True)
        out = mpremote(vdev, "exec", "from firmware.main import running; b = running['board'];"
                       " print(b.door_contact.read(), b.rex.read(), b.tamper.read())")
        assert out.split() == ["open", "True", "False"]
        with pytest.raises(IOChannelError):
            io.set_input("door_contact", "ajar")
        with pytest.raises(IOChannelError):
            io.set_input("rex", "yes")
        with pytest.raises(IOChannelError):
            io.set_input("volume", 3)


def test_io_channel_reports_output_changes_with_timestamps(vdev: VirtualDevice) -> None:
    with VirtualIO(vdev.io_addr) as io:
        t0 = int(io.state()["t"])
        mpremote(vdev, "exec", "from firmware.main import running; b = running['board'];"
                 " b.relay.set(True); b.buzzer.set(True); b.led.set('green'); b.relay.set(False)")
        on = io.wait_output("relay", True)
        off = io.wait_output("relay", False)
        assert t0 <= on.device_ms <= off.device_ms
        assert io.wait_output("led", "green").value == "green"
        assert [e.value for e in io.outputs("relay")] == [True, False]
        assert io.status()["ready"] is True


def test_io_channel_status_gives_only_the_entries_asked_for(vdev: VirtualDevice) -> None:
    with VirtualIO(vdev.io_addr) as io:
        full = io.status()
        assert len(full) > 2
        assert io.status("ready", "version", "no_such_entry") == {
            "ready": full["ready"], "version": full["version"]}
        with pytest.raises(IOChannelError, match="keys is a list"):
            io.request({"op": "status", "keys": "ready"})
        for keys in ([["ready"]], [{"ready": 1}], ["ready", 5]):  # names are strings
            with pytest.raises(IOChannelError, match="keys is a list of status names"):
                io.request({"op": "status", "keys": keys})
        assert io.status("ready") == {"ready": full["ready"]}  # the channel still answers


def test_io_channel_ends_only_a_client_whose_line_is_too_long_and_serves_eight(
        vdev: VirtualDevice) -> None:
    """The channel's limits, alike on both images (C: modlinks.c, Python: pylinks.py): a
    request line over 4 KiB ends that client's connection, eight clients are served at once
    and a ninth is closed, and a freed place is taken again."""
    def closed(s: socket.socket) -> bool:
        s.settimeout(5)
        try:
            return s.recv(64) == b""
        except ConnectionResetError:
            return True

    def line(size: int) -> bytes:  # a get request of exactly size bytes, its newline included
        head, tail = b'{"op": "get", "pad": "', b'"}\n'
        return head + b"x" * (size - len(head) - len(tail)) + tail

    with VirtualIO(vdev.io_addr) as io:
        with socket.create_connection(vdev.io_addr, timeout=5) as edge:
            edge.sendall(line(4096))
            edge.settimeout(5)
            assert json.loads(edge.makefile("rb").readline())["ok"] is True
        with socket.create_connection(vdev.io_addr, timeout=5) as bad:
            bad.sendall(line(4097))
            assert closed(bad)
        with socket.create_connection(vdev.io_addr, timeout=5) as endless:
            endless.sendall(b"x" * 5000)  # no end of line at all
            assert closed(endless)
        assert io.state()["ok"] is True
        others = [VirtualIO(vdev.io_addr) for _ in range(7)]
        try:
            for c in others:
                assert c.state()["ok"] is True
            with socket.create_connection(vdev.io_addr, timeout=5) as ninth:
                assert closed(ninth)
            others.pop().close()
            _served_again(vdev.io_addr)
        finally:
            for c in others:
                c.close()


def test_io_channel_answers_a_failing_request_with_its_error_and_carries_on(
        vdev: VirtualDevice) -> None:
    with VirtualIO(vdev.io_addr) as io:
        mpremote(vdev, "exec", "from firmware.main import running, status; "
                 "running['board'].io.status_provider = lambda: 1 // 0")
        with pytest.raises(IOChannelError, match="ZeroDivisionError"):
            io.status()
        assert io.state()["ok"] is True
        mpremote(vdev, "exec", "from firmware.main import running, status; "
                 "running['board'].io.status_provider = lambda: {'big': 'x' * 40000}")
        with pytest.raises(IOChannelError, match="reply too long"):
            io.status()
        mpremote(vdev, "exec", "from firmware.main import running, status; "
                 "running['board'].io.status_provider = lambda: status")
        assert io.status("ready") == {"ready": True}


def test_io_channel_delivers_every_change_of_a_fast_burst(vdev: VirtualDevice) -> None:
    with VirtualIO(vdev.io_addr) as io, VirtualIO(vdev.io_addr) as watcher:
        mpremote(vdev, "exec", "import asyncio\n"
                 "from firmware.main import running\n"
                 "b = running['board']\n"
                 "async def go():\n"
                 "    for i in range(101):\n"
                 "        b.buzzer.set(i % 2 == 0)\n"
                 "        await asyncio.sleep_ms(0)\n"
                 "asyncio.run(go())")
        for client in (io, watcher):
            client.wait_output("buzzer", True, after_ms=0)
            deadline = time.monotonic() + 20
            while len(client.outputs("buzzer")) < 101:
                assert time.monotonic() < deadline, len(client.outputs("buzzer"))
                time.sleep(0.05)
            changes = client.outputs("buzzer")
            assert [e.value for e in changes] == [i % 2 == 0 for i in range(101)]
            assert all(a.device_ms <= b.device_ms for a, b in zip(changes, changes[1:], strict=False))
        assert io.state()["outputs"]["buzzer"] is True


def test_reader_uart_keeps_one_emulator_and_closes_another(vdev: VirtualDevice) -> None:
    with socket.create_connection(vdev.reader_addr, timeout=5) as first:
        first.settimeout(10)
        assert first.recv(64)  # the card task talks to its reader: the link is this one's
        with socket.create_connection(vdev.reader_addr, timeout=5) as second:
            second.settimeout(5)
            try:
                assert second.recv(64) == b""
            except ConnectionResetError:
                pass
        first.settimeout(10)
        assert first.recv(64)  # still the reader's


def test_reader_uart_carries_bytes_both_ways(vdev: VirtualDevice) -> None:
    program = ("import asyncio\n"
               "from firmware.main import running\n"
               "u = running['board'].reader_uart\n"
               "async def go():\n"
               + BORROW_READER +  # the firmware's card task lends the reader
               "    u.reset_input()\n"
               "    print('ready')\n"
               "    d = await u.read(64, 5000)\n"
               "    u.write(b'echo:' + d)\n"
               "    await u.drain()\n"
               "    print(d.hex())\n"
               "    running['cards'].hold = False\n"
               "asyncio.run(go())")
    with socket.create_connection(vdev.reader_addr, timeout=5) as s:
        proc = subprocess.Popen([MPREMOTE, "connect", vdev.pty, "exec", program],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        s.settimeout(0.3)
        try:
            while s.recv(256):  # frames the card task sent before it lent the reader
                pass
        except TimeoutError:
            pass
        s.settimeout(5)
        s.sendall(b"\x00\x00\xff\x02\xfe\xd4\x02\x2a\x00")
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert out.strip() == "0000ff02fed4022a00"
        got = b""
        while len(got) < 14:
            got += s.recv(64)
        # The echo first; the card task, given the reader back, may send its next frame at once
        # (it can arrive in the same read).
        assert got[:14] == b"echo:\x00\x00\xff\x02\xfe\xd4\x02\x2a\x00"


def test_a_door_out_of_file_descriptors_closes_new_connections_and_does_not_spin(
        vdev: VirtualDevice) -> None:
    """Out of descriptors (EMFILE), accept() fails and leaves the connection waiting: the
    listening socket stays readable and the task polling it spun at 100 % CPU until one freed.
    The door's descriptor limit is lowered to its lowest free number (no new one can open):
    a connection to either link is closed at once, the door stays idle, the client it holds
    is still answered, and a freed descriptor is taken by the next client."""

    def closed(s: socket.socket) -> bool:
        s.settimeout(3)
        try:
            return s.recv(64) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False  # still waiting to be accepted

    def cpu_s(pid: int) -> float:  # user + system time, from /proc/<pid>/stat
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    pid = int(str(vdev.describe()["pid"]))
    held = VirtualIO(vdev.io_addr)
    assert held.state()["ok"] is True
    open_fds = {int(n) for n in os.listdir(f"/proc/{pid}/fd")}
    lowest_free = min(set(range(len(open_fds) + 1)) - open_fds)
    limit = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, limit[1]))
    try:
        extra_io = socket.create_connection(vdev.io_addr, timeout=5)
        extra_reader = socket.create_connection(vdev.reader_addr, timeout=5)
        with extra_io, extra_reader:
            time.sleep(0.2)
            before = cpu_s(pid)
            time.sleep(1.0)
            spent = cpu_s(pid) - before
            assert spent < 0.3, f"{spent:.2f} s of CPU in 1 s: the door spins"
            assert closed(extra_io) and closed(extra_reader)
        assert held.state()["ok"] is True  # the channel carries on
        held.close()  # its descriptor frees: the next client takes it
        _served_again(vdev.io_addr)
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limit)
        held.close()


def test_stop_and_restart_keeps_files(tmp_path: Path) -> None:
    with VirtualDevice(tmp_path / "dev") as d:
        mpremote(d, "exec", "with open('cfg.txt', 'w') as f: f.write('v1')")
    with VirtualDevice(tmp_path / "dev") as d:
        assert mpremote(d, "exec", "print(open('cfg.txt').read())").strip() == "v1"


def test_restart_after_stop_boots_again_with_the_same_flash(vdev: VirtualDevice) -> None:
    mpremote(vdev, "exec", "with open('n.txt', 'w') as f: f.write('7')")
    vdev.stop()
    vdev.restart()
    assert vdev.alive()
    assert mpremote(vdev, "exec", "print(open('n.txt').read())").strip() == "7"
    info = json.loads((vdev.state_dir / "vdev.json").read_text())
    assert info["console"] == vdev.pty


def test_power_cut_then_power_up_mounts_the_filesystem(vdev: VirtualDevice) -> None:
    mpremote(vdev, "exec", "f = open('big.bin', 'wb')\nfor i in range(40): f.write(bytes(1000))\nf.close()")
    with VirtualIO(vdev.io_addr) as before:
        before.set_input("door_contact", "open")
        vdev.kill()
        with pytest.raises(IOChannelError):
            before.state()
    vdev.restart()
    out = mpremote(vdev, "exec", "import os; print(os.stat('big.bin')[6])")
    assert out.strip() == "40000"
    with VirtualIO(vdev.io_addr) as after:  # same address; inputs back to their defaults
        assert after.state()["inputs"]["door_contact"] == "closed"


def test_code_deployed_to_flash_lib_runs_after_reset(vdev: VirtualDevice, tmp_path: Path) -> None:
    from host_tools.mpy_build import DEFAULT_BUILD_DIR, build_device_tree

    build_device_tree()
    pkg = tmp_path / "firmware"
    pkg.mkdir()
    for mpy in (DEFAULT_BUILD_DIR / "firmware").glob("*.mpy"):
        if mpy.name != "__init__.mpy":
            (pkg / mpy.name).write_bytes(mpy.read_bytes())
    (pkg / "__init__.py").write_text('VERSION = "9.9.9-deployed"\n')
    mpremote(vdev, "fs", "cp", "-r", str(pkg), ":lib/")
    with VirtualIO(vdev.io_addr) as io:
        assert io.status()["version"] != "9.9.9-deployed"  # deployed code waits for a reset
    mpremote(vdev, "reset")
    deadline = time.monotonic() + 20
    while vdev.boots < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    vdev.wait_ready()
    with VirtualIO(vdev.io_addr) as io:
        assert io.status()["version"] == "9.9.9-deployed"


def test_bad_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(VirtualDeviceError, match="not a directory"):
        VirtualDevice(f).start()


def test_a_larger_blank_flash_image_is_used_at_its_size(tmp_path: Path) -> None:
    """A bench gives the virtual board the ESP32's 8 MiB data partition (room for a second
    100k whitelist during a snapshot update) by creating the image first; default 2 MiB."""
    from host_tools.console import mpremote

    big = tmp_path / "big"
    big.mkdir()
    (big / "flash.img").write_bytes(b"\xff" * (8 << 20))
    probe = "import os\ns = os.statvfs('/flash')\nprint(s[0] * s[2])"
    with VirtualDevice(big) as d:
        assert int(mpremote(d.pty, "exec", probe).strip()) == 8 << 20
    with VirtualDevice(tmp_path / "default") as d:
        assert int(mpremote(d.pty, "exec", probe).strip()) == 2 << 20


def test_a_door_whose_port_was_taken_while_it_was_off_boots_with_its_servers(vdev: VirtualDevice) -> None:
    # A busy machine's other processes pick ports too: one took the reader link's port while
    # the door was off. The door boots on another port it chose, with both servers answering,
    # instead of stopping in safe mode on EADDRINUSE.
    old = vdev.reader_port
    vdev.kill()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", old))
        squatter.listen()
        vdev.restart()
        assert vdev.reader_port != old
        with socket.create_connection(vdev.reader_addr, timeout=5):
            pass
        with VirtualIO(vdev.io_addr) as io:
            assert "safe_mode" not in io.status() or not io.status()["safe_mode"]


def test_server_ports_are_chosen_below_the_ephemeral_range() -> None:
    from host_tools.services._proc import _ephemeral_low, bindable, free_port

    low = _ephemeral_low()
    ports = {free_port() for _ in range(20)}
    assert all(p < low for p in ports) and len(ports) > 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert not bindable(s.getsockname()[1])


def test_a_door_stopped_then_started_on_a_taken_port_boots_with_its_servers(tmp_path: Path) -> None:
    dev = VirtualDevice(tmp_path / "door").start()
    try:
        dev.stop()
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(dev.io_addr)
            squatter.listen()
            old = dev.io_port
            dev.start()
            assert dev.io_port != old
            with VirtualIO(dev.io_addr, timeout_s=5) as io:
                assert not io.status().get("safe_mode")
    finally:
        dev.stop()
