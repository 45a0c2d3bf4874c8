"""`doorctl reader emulate`: finds the device's reader link in vdev.json, answers a door's PN532
frames (the device driver plays the door here, on a listening socket like the virtual device's),
relays to a card on vpcd, stops on SIGTERM with a summary, and says plainly what is wrong."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from card_reader import pn532 as p
from host_tools.cards import pcsc, vcard
from host_tools.errors import EXIT_NO_DEVICE, EXIT_USAGE
from host_tools.pn532_emu import SocketStream, release_connection
from host_tools.pn532_sync import PN532

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
READER = "Virtual PCD 00 00"


def doorctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOORCTL, "reader", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def door_link(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    """A listening reader link and a state directory naming it, as the virtual device writes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    (tmp_path / "vdev.json").write_text(json.dumps({"reader": f"127.0.0.1:{port}"}))
    try:
        yield tmp_path, srv
    finally:
        srv.close()


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=30)


def test_emulate_answers_the_door_with_an_empty_field(door_link: tuple[Path, socket.socket]) -> None:
    state, srv = door_link
    proc = subprocess.Popen([DOORCTL, "reader", "emulate", "--device-state", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        srv.settimeout(30)
        conn, _ = srv.accept()
        d = PN532(SocketStream(conn), ack_timeout_ms=500)
        assert d.begin() == bytes.fromhex("32010607")
        assert d.list_target() is None
        conn.close()  # the device reboots: the emulator comes back on its own
        again, _ = srv.accept()
        d2 = PN532(SocketStream(again), ack_timeout_ms=500)
        assert d2.firmware_version() == b"\x32\x01\x06\x07"
        # Five commands; a frame sent again after a late ACK (an emulator that got no CPU for
        # 0.5 s) is counted by the emulator too, if it read it before it was stopped.
        sent = d.core.frames + d2.core.frames
        assert sent - d.core.resends - d2.core.resends == 5
        out, err = stop(proc)
        again.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    counted = re.search(r"(\d+) commands, 0 APDUs relayed", out)
    assert "reader   127.0.0.1:" in out and counted is not None and 5 <= int(counted[1]) <= sent
    assert "reader link closed; waiting for the device" in out and "reader link up again" in out


def test_emulate_with_field_timing_paces_the_link(door_link: tuple[Path, socket.socket]) -> None:
    state, srv = door_link
    proc = subprocess.Popen([DOORCTL, "reader", "emulate", "--device-state", str(state),
                             "--field-timing"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        srv.settimeout(30)
        conn, _ = srv.accept()
        d = PN532(SocketStream(conn), ack_timeout_ms=500)
        d.begin()
        payload = bytes(100)
        frame = p.encode_frame(p.TFI_HOST, b"\x00\x00" + payload)  # Diagnose: echo
        t0 = time.monotonic()
        conn.sendall(frame)
        want = len(p.ACK) + len(p.encode_frame(p.TFI_PN532, b"\x01\x00" + payload))
        got = b""
        conn.settimeout(10)
        while len(got) < want:
            chunk = conn.recv(4096)
            assert chunk
            got += chunk
        elapsed = time.monotonic() - t0
        out, err = stop(proc)
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert got.endswith(payload + got[-2:]) and proc.returncode == 0, err
    assert elapsed >= (len(frame) + want) * 10 / 115200 * 0.999  # no faster than the HSU wire
    assert "field timing" in out


def test_emulate_relays_to_the_card_on_a_pcsc_reader(door_link: tuple[Path, socket.socket]) -> None:
    state, srv = door_link
    started = pcsc.start_pcscd()
    try:
        assert pcsc.wait_for_reader(READER)
        card = vcard.VirtualDesfire()
        with vcard.VpcdClient(card, port=vcard.vpcd_port()):
            release_connection(pcsc.wait_for_card(READER)[0])
            proc = subprocess.Popen([DOORCTL, "reader", "emulate", "--device-state", str(state),
                                     "--pcsc", READER],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                srv.settimeout(30)
                conn, _ = srv.accept()
                d = PN532(SocketStream(conn), ack_timeout_ms=500)
                t = d.list_target()
                assert t is not None and t.uid == card.uid
                assert d.transceive(bytes.fromhex("9060000000"))[-2:] == b"\x91\xaf"
                out, err = stop(proc)
                conn.close()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        pcsc.wait_until_absent(READER)
    finally:
        if started is not None:
            started.terminate()
            started.wait(10)
    assert proc.returncode == 0, err
    assert f"cards    from {READER}" in out and "1 APDUs relayed" in out


def test_emulate_errors(tmp_path: Path) -> None:
    both = doorctl("emulate", "--device-state", str(tmp_path), "--reader-addr", "127.0.0.1:1")
    assert both.returncode == EXIT_USAGE and "exactly one of" in both.stderr
    bad = doorctl("emulate", "--reader-addr", "localhost")
    assert bad.returncode == EXIT_USAGE and "HOST:PORT" in bad.stderr
    missing = doorctl("emulate", "--device-state", str(tmp_path))
    assert missing.returncode == EXIT_NO_DEVICE and "doorctl virtual run" in missing.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = doorctl("emulate", "--reader-addr", f"127.0.0.1:{port}")
    assert down.returncode == EXIT_NO_DEVICE and "is the device running" in down.stderr


class FdStream:
    """A blocking stream over a pty's master for the device driver (the door's UART end)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return os.write(self.fd, data)

    def read(self, n: int, timeout_ms: int) -> bytes | None:
        if not select.select([self.fd], [], [], max(timeout_ms, 1) / 1000)[0]:
            return b""
        return os.read(self.fd, n)

    def reset_input(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            os.read(self.fd, 4096)


def test_emulate_on_a_serial_port() -> None:
    """`--serial`: the door's reader UART wired to a serial port of this computer (a pty here)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen([DOORCTL, "reader", "emulate", "--serial", os.ttyname(slave)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        d = PN532(FdStream(master), ack_timeout_ms=500)
        deadline = time.monotonic() + 30
        while True:  # until the emulator has opened the port
            try:
                assert d.begin() == bytes.fromhex("32010607")
                break
            except p.PN532Error:
                assert time.monotonic() < deadline, "the emulator never answered on the serial port"
        assert d.list_target() is None
        out, err = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    assert "reader   /dev/pts/" in out and "(PN532 emulated" in out


def test_emulate_refuses_a_missing_serial_port(tmp_path: Path) -> None:
    r = doorctl("emulate", "--serial", str(tmp_path / "ttyNONE"))
    assert r.returncode == EXIT_NO_DEVICE and "Traceback" not in r.stderr
    assert "cannot open the serial port" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    both = doorctl("emulate", "--serial", "/dev/null", "--reader-addr", "127.0.0.1:1")
    assert both.returncode == EXIT_USAGE and "exactly one of" in both.stderr
