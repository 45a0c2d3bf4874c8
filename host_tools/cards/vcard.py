"""Virtual cards on vsmartcard's vpcd: the card side of the vpcd TCP protocol.

vpcd (the pcscd driver) listens on 127.0.0.1:35963 (slot 0, reader "Virtual PCD 00 00") and
35964 (slot 1, "Virtual PCD 00 01"). The card connects to it; every message either way is a
big-endian uint16 length then the payload. One-byte messages from vpcd are control: 00 power
off, 01 power on, 02 reset (no reply), 04 get ATR (reply: the ATR). Anything longer is a C-APDU,
answered with the R-APDU. Closing the connection is the card leaving the field.

Cards: `DesfireCard` (host_tools/cards/desfire.py), a clone (same UID, keys it does not know),
and a UID-only card that answers nothing but the reader's UID pseudo-APDU.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Protocol

from host_tools.cards.desfire import DesfireCard, blank_state

VPCD_HOST = "127.0.0.1"
VPCD_PORT = 35963  # the system pcscd's; a run's private pcscd has its own (vpcd_port)
DESFIRE_ATR = bytes.fromhex("3B8180018080")  # PC/SC part 3 ATR of an ISO 14443-4 card, historical 0x80
CLASSIC_1K_ATR = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")


def vpcd_port(slot: int = 0) -> int:
    """vpcd's port for `slot` on the pcscd this process uses (host_tools/cards/pcsc_private.py)."""
    from host_tools.cards.pcsc_private import PORT_ENV

    return int(os.environ.get(PORT_ENV) or VPCD_PORT) + slot


class Card(Protocol):
    atr: bytes

    def process(self, apdu: bytes) -> bytes: ...

    def reset(self) -> None: ...


class VirtualDesfire:
    """A DESFire EV2-subset card; `state_path` keeps it personalized across runs."""

    atr = DESFIRE_ATR

    def __init__(self, state_path: str | None = None, uid: bytes | None = None) -> None:
        if state_path:
            self.card = DesfireCard.load(state_path, uid or random_uid())
        else:
            self.card = DesfireCard(blank_state(uid or random_uid()))

    @property
    def uid(self) -> bytes:
        return bytes(self.card.uid)

    def process(self, apdu: bytes) -> bytes:
        return bytes(self.card.process(apdu))

    def reset(self) -> None:
        self.card.reset()


def clone_of(original: VirtualDesfire) -> VirtualDesfire:
    """A clone: same UID, same application and file layout, copied credential bytes, but keys the
    cloner could not read (random). What a UID-copying or file-dumping attacker can make."""
    clone = VirtualDesfire(uid=original.uid)
    state = clone.card.state
    src = original.card.state
    for aid, app in src["apps"].items():
        state["apps"][aid] = {
            "key_settings": app["key_settings"],
            "keys": [os.urandom(16).hex() for _ in app["keys"]],
            "key_versions": list(app["key_versions"]),
            "files": {n: dict(f) for n, f in app["files"].items()},
        }
    return clone


class UidOnlyCard:
    """A card that only has a UID (e.g. a MIFARE Classic or Ultralight seen through PC/SC)."""

    atr = CLASSIC_1K_ATR

    def __init__(self, uid: bytes | None = None) -> None:
        self.uid = uid or bytes.fromhex("11223344")

    def process(self, apdu: bytes) -> bytes:
        if apdu[:2] == b"\xff\xca":
            return self.uid + b"\x90\x00"
        return b"\x6e\x00" if apdu[:1] != b"\xff" else b"\x6a\x81"

    def reset(self) -> None:
        pass


class ClassicCard:
    """A MIFARE Classic 1K behind a PC/SC reader: the reader's storage-card pseudo-APDUs
    (PC/SC part 3): GET UID (FF CA), LOAD KEY (FF 82, volatile slot), GENERAL AUTHENTICATE
    (FF 86, key A or B of the block's sector), READ BINARY (FF B0, 16 bytes of an
    authenticated sector). Keys are checked against the sector trailers (default FF x 6)."""

    atr = CLASSIC_1K_ATR

    def __init__(self, uid: bytes | None = None) -> None:
        self.uid = uid or os.urandom(4)
        self.blocks = [bytes(16) for _ in range(64)]
        for sector in range(16):
            self.blocks[sector * 4 + 3] = b"\xff" * 6 + b"\xff\x07\x80\x69" + b"\xff" * 6
        self._keys: dict[int, bytes] = {}
        self._authed: int | None = None  # sector authenticated, if any

    def write_block(self, block: int, data: bytes) -> None:
        """Personalize: set a block (a trailer: key A 6 | access 4 | key B 6)."""
        self.blocks[block] = bytes(data).ljust(16, b"\x00")[:16]

    def set_key_a(self, sector: int, key: bytes) -> None:
        t = self.blocks[sector * 4 + 3]
        self.blocks[sector * 4 + 3] = bytes(key) + t[6:]

    def process(self, apdu: bytes) -> bytes:
        ins = apdu[1:2] if apdu[:1] == b"\xff" else b""
        if ins == b"\xca":
            return self.uid + b"\x90\x00"
        if ins == b"\x82" and len(apdu) == 11:
            self._keys[apdu[3]] = apdu[5:11]
            return b"\x90\x00"
        if ins == b"\x86" and len(apdu) >= 10:
            block, key_type, slot = apdu[7], apdu[8], apdu[9]
            trailer = self.blocks[(block // 4) * 4 + 3]
            want = trailer[:6] if key_type == 0x60 else trailer[10:16]
            self._authed = None
            if block < 64 and self._keys.get(slot) == want:
                self._authed = block // 4
                return b"\x90\x00"
            return b"\x63\x00"
        if ins == b"\xb0" and len(apdu) >= 5:
            block = apdu[3]
            if block < 64 and self._authed == block // 4:
                data = self.blocks[block]
                if block % 4 == 3:
                    data = bytes(6) + data[6:10] + bytes(6)  # keys never read back
                return data + b"\x90\x00"
            return b"\x69\x82"
        return b"\x6a\x81" if apdu[:1] == b"\xff" else b"\x6e\x00"

    def reset(self) -> None:
        self._authed = None


def random_uid() -> bytes:
    """A 7-byte NXP-style UID (first byte 0x04, the manufacturer code)."""
    return b"\x04" + os.urandom(6)


class VpcdClient:
    """Puts a card into a vpcd slot from a background thread.

    `remove_after` may name a predicate on each C-APDU: when it returns True the card answers it,
    then leaves the field (a card pulled away between two frames of an exchange). The next
    command then fails at the reader, as with a real card. (vpcd does not recover when the card
    side disconnects while a command is in flight, so a virtual card never leaves mid-frame; send
    the next command once pcscd has seen the card go, see `wait_until_absent`.)"""

    def __init__(self, card: Card, port: int | None = None, host: str = VPCD_HOST,
                 remove_after: Callable[[bytes], bool] | None = None) -> None:
        self.card = card
        self.host = host
        self.port = vpcd_port() if port is None else port
        self.remove_after = remove_after
        self.removed = threading.Event()
        self.leaving = threading.Event()
        self.apdus = 0
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> VpcdClient:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name=f"vpcd-card-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take the card out of the field."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._close()

    def __enter__(self) -> VpcdClient:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        self.removed.set()

    def _recv_exact(self, n: int) -> bytes | None:
        assert self._sock is not None
        buf = b""
        while len(buf) < n:
            if self._stop.is_set():
                return None
            try:
                chunk = self._sock.recv(n - len(buf))
            except TimeoutError:
                continue
            if not chunk:
                return None
            buf += chunk
        return buf

    def _send(self, payload: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(struct.pack(">H", len(payload)) + payload)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                head = self._recv_exact(2)
                if head is None:
                    break
                msg = self._recv_exact(struct.unpack(">H", head)[0])
                if msg is None:
                    break
                if len(msg) == 1:
                    if msg[0] in (0x00, 0x01, 0x02):
                        self.card.reset()
                    elif msg[0] == 0x04:
                        self._send(self.card.atr)
                    continue
                self.apdus += 1
                leave = self.remove_after is not None and self.remove_after(msg)
                if leave:
                    self.leaving.set()  # set before the answer goes out: the reader side may act at once
                self._send(self.card.process(msg))
                if leave:
                    break
        except OSError as e:  # vpcd went away
            self.error = e
        finally:
            self._close()
