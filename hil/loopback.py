"""The loopback bench: every interface of a bench rig is real, its far end virtual, so CI
proves the bench driver (hil/bench_door.py) without hardware.

- DUT console: the virtual device's console pty (a serial port for mpremote);
- rig I/O board: the real hil/board/rig_io.py in a MicroPython unix process behind a pty, its
  pins wired to the virtual device's I/O channel (hil/loopback_wiring.py);
- DUT reader link: the device's reader stream bridged to a pty, which the PN532 emulator's serial
  transport opens as `[reader] port`;
- cards: virtual cards on vpcd's two readers, put there by a card changer service (five cards,
  two readers) that the bench driver asks through `[changer] addr`.

    bench = LoopbackBench(tmp_path)          # writes bench.rig (a kind = "bench" rig file)
    subprocess.run(["pytest", "hil/test_door_e2e.py", "--rig", str(bench.rig)])
    bench.close()

`python -m hil.loopback DIR` starts one and waits (Ctrl-C stops it). Test equipment only.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import termios
import threading
import tty
from pathlib import Path
from typing import Any

from hil.loopback_wiring import Wiring
from hil.rig import CARD_ROLES
from host_tools import tcp
from host_tools.cards import pcsc, sitekeys, vcard
from host_tools.cards.kit import SiteKit
from host_tools.paths import REPO_ROOT, micropython, micropython_env
from host_tools.pn532_emu import release_connection
from host_tools.vdev.device import VirtualDevice, selected_image

RIG_IO = REPO_ROOT / "hil" / "board" / "rig_io.py"
FAKE_MACHINE = REPO_ROOT / "hil" / "board" / "loopback"
# The DUT's heap: the firmware idles at about 220 KiB of the virtual device's default 256 KiB
# with its uplink connected, which leaves too little for the console programs a bench driver
# runs beside it (commissioning, status); the loopback's virtual DUT gets room for them.
DUT_HEAP = "512K"
SLOTS = {"Virtual PCD 00 00": vcard.vpcd_port(0), "Virtual PCD 00 01": vcard.vpcd_port(1)}
# Which vpcd reader each card role sits on (shared: the changer swaps them).
CARD_READERS = {"resident": "Virtual PCD 00 00", "master": "Virtual PCD 00 01",
                "lost": "Virtual PCD 00 00", "clone": "Virtual PCD 00 01",
                "stranger": "Virtual PCD 00 00"}


def raw_pty() -> tuple[int, int, str]:
    """(master, slave, slave's name), the slave in raw mode: a serial port with nothing between."""
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


class ReaderBridge:
    """The device's reader stream (TCP) to a pty: what a USB-serial adapter on the door's
    reader UART is on a bench. Reconnects when the device comes back from a reboot."""

    def __init__(self, dev: VirtualDevice) -> None:
        self.dev = dev
        self.master, self.slave, self.port = raw_pty()
        os.set_blocking(self.master, False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sock = tcp.connect(self.dev.reader_addr, timeout=0.5)
            except OSError:
                self._drop(0.1)  # no door on the wire: what the host sends is lost
                continue
            try:
                self._copy(sock)
            except OSError:
                pass  # the door lost its power or reset mid-stream: connect again
            finally:
                sock.close()

    def _drop(self, wait_s: float) -> None:
        ready, _, _ = select.select([self.master], [], [], wait_s)
        if ready:
            try:
                os.read(self.master, 4096)
            except BlockingIOError:
                pass

    def _copy(self, sock: socket.socket) -> None:
        ends: list[Any] = [self.master, sock]
        while not self._stop.is_set():
            ready, _, _ = select.select(ends, [], [], 0.2)
            if self.master in ready:
                try:
                    sock.sendall(os.read(self.master, 4096))
                except BlockingIOError:
                    pass
            if sock in ready:
                data = sock.recv(4096)
                if not data:
                    return
                self._to_host(data)

    def _to_host(self, data: bytes) -> None:
        """Like a UART, the door's bytes go out whether anyone listens or not: when nothing
        reads the host side and it is full, what waits there is dropped (never the door
        stalled, whose unsent bytes would pile up in its heap)."""
        view = memoryview(data)
        for _ in range(100):
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                termios.tcflush(self.slave, termios.TCIFLUSH)
                continue
            if not view:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.master)
        os.close(self.slave)


class RigIOProcess:
    """hil/board/rig_io.py in the unix port, its stdin/stdout on a pty (the board's USB serial)."""

    def __init__(self, wires_port: int) -> None:
        self.master, self.slave, self.port = raw_pty()
        env = micropython_env(FAKE_MACHINE)
        env["RIG_WIRES_PORT"] = str(wires_port)
        self.proc = subprocess.Popen([micropython(), str(RIG_IO)], stdin=self.master,
                                     stdout=self.master, stderr=subprocess.PIPE, env=env)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


class CardChangerService:
    """The bench's card changer for the loopback: `place <role> <reader>` puts that role's
    virtual card on the vpcd reader (hil/drivers/cards.py has the protocol)."""

    def __init__(self, cards: dict[str, Any]) -> None:
        self.cards = cards
        self.placed: list[tuple[str, str]] = []
        self._clients: dict[str, vcard.VpcdClient] = {}
        self._server = socket.create_server(("127.0.0.1", 0))
        self.addr = self._server.getsockname()[:2]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn:
                line = conn.makefile("rb").readline().decode().strip()
                try:
                    self.place(*line.split(" ", 2)[1:])
                    answer = "ok"
                except Exception as e:
                    answer = f"err {e}"
                conn.sendall(answer.encode() + b"\n")

    def place(self, role: str, reader: str) -> None:
        if role not in self.cards or reader not in SLOTS:
            raise ValueError(f"no {role!r} card or no vpcd reader {reader!r}")
        old = self._clients.pop(reader, None)
        if old is not None:
            old.stop()
            pcsc.wait_until_absent(reader)
        self._clients[reader] = vcard.VpcdClient(self.cards[role], port=SLOTS[reader]).start()
        release_connection(pcsc.wait_for_card(reader)[0])
        self.placed.append((role, reader))

    def close(self) -> None:
        self._server.close()
        for c in self._clients.values():
            c.stop()
        self._clients = {}


class LoopbackBench:
    def __init__(self, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        site = SiteKit()
        cards: dict[str, Any] = {role: site.issue()[0] for role in ("resident", "master", "lost")}
        cards["clone"] = vcard.clone_of(cards["resident"])
        cards["stranger"] = SiteKit(site.site_id + 1).issue()[0]
        self.site_keys = tmp / "site-keys.json"
        sitekeys.write_secret(self.site_keys, site.keys, force=True)
        self._parts: list[Any] = []
        try:
            self.dev = VirtualDevice(tmp / "door", heap=DUT_HEAP, image=selected_image()).start()
            self._parts.append(self.dev)
            self.dev.kill()  # the rig's power relay is off until the bench driver turns it on
            self.wiring = Wiring(self.dev)
            self._parts.append(self.wiring)
            self.board = RigIOProcess(self.wiring.port)
            self._parts.append(self.board)
            self.reader = ReaderBridge(self.dev)
            self._parts.append(self.reader)
            self.changer = CardChangerService(cards)
            self._parts.append(self.changer)
        except BaseException:
            self.close()
            raise
        self.rig = tmp / "bench.rig"
        self.rig.write_text(self.rig_text())

    def rig_text(self) -> str:
        host, port = self.changer.addr
        cards = "\n".join(f'{role} = "{CARD_READERS[role]}"' for role in CARD_ROLES)
        return (f'kind = "bench"\n[dut]\nport = "{self.dev.pty}"\n[io]\nport = "{self.board.port}"\n'
                f'[reader]\nport = "{self.reader.port}"\n[site]\nkeys = "{self.site_keys.name}"\n'
                f'[cards]\n{cards}\n[changer]\naddr = "{host}:{port}"\n')

    def close(self) -> None:
        for part in reversed(self._parts):
            try:
                if isinstance(part, VirtualDevice):
                    part.stop()
                else:
                    part.close()
            except Exception:
                pass
        self._parts = []


def main() -> None:  # pragma: no cover - a manual tool
    import signal

    bench = LoopbackBench(Path(sys.argv[1] if len(sys.argv) > 1 else "build/loopback"))
    print(f"rig file {bench.rig}\n{bench.rig_text()}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        while not done.is_set():
            done.wait(0.5)
    finally:
        bench.close()


if __name__ == "__main__":  # pragma: no cover
    main()
