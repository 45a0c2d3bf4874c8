"""PN532 emulator: the reader chip on the host side of the device's reader UART.

It parses the firmware's PN532 host frames (UM0701-02, the same codec as `firmware/pn532.py`),
answers each information frame with an ACK then a real PN532 response frame, and relays
InDataExchange payloads (APDUs) to a card: a PC/SC reader through pyscard (a virtual card on
vsmartcard's vpcd, or a physical card on a bench reader), or any in-process card object.

    emu = PN532Emulator()
    emu.present("Virtual PCD 00 01")      # whatever card is on that PC/SC reader is in the field
    emu.present(card_a, card_b)           # two cards: InListPassiveTarget reports both
    emu.remove()                          # empty field: InListPassiveTarget reports 0 targets
    link = emu.connect(("127.0.0.1", port))   # serve the device's reader stream (thread)
    link = emu.open_serial("/dev/ttyUSB1")    # or the door's reader UART wired to a serial port
    link.close()
    replies = emu.receive(data)           # or drive it by hand: bytes in, bytes out

A card object has `uid`, `sak`, `atqa`, `ats` and `transceive(apdu) -> response`;
`PcscCard(reader)` and `LocalCard(...)` are the two provided.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from firmware import pn532 as p
from host_tools import tcp

FIRMWARE_VERSION = b"\x32\x01\x06\x07"  # PN532, v1.6, supports ISO 14443A/B and 18092
UID_APDU = b"\xff\xca\x00\x00\x00"


class Card(Protocol):
    uid: bytes
    sak: int
    atqa: bytes
    ats: bytes

    def transceive(self, apdu: bytes) -> bytes: ...


class CardGone(Exception):
    """The card stopped answering (left the field)."""


def ats_from_atr(atr: bytes) -> bytes:
    """An ATS for an ISO 14443-4 card seen through PC/SC (PC/SC part 3 ATR: 3B 8n 80 01 hist.. TCK)."""
    hist = b""
    if len(atr) >= 5 and atr[0] == 0x3B and atr[1] & 0xF0 == 0x80 and atr[2:4] == b"\x80\x01":
        hist = atr[4:4 + (atr[1] & 0x0F)]
    body = b"\x78\x77\x81\x02" + hist  # T0 (FSCI 256, TA TB TC), TA, TB, TC, historical bytes
    return bytes([len(body) + 1]) + body


STORAGE_CARD_RID = bytes.fromhex("804F0CA000000306")  # PC/SC part 3: a storage card (e.g. Classic)


def is_iso_dep_atr(atr: bytes) -> bool:
    """A PC/SC part 3 contactless ATR of an ISO 14443-4 card (not a storage card)."""
    return (len(atr) >= 4 and atr[0] == 0x3B and atr[1] & 0xF0 == 0x80 and atr[2:4] == b"\x80\x01"
            and atr[4:12] != STORAGE_CARD_RID)


def release_connection(conn: Any) -> None:
    """Disconnect and release a pyscard connection's PC/SC context now rather than at garbage
    collection, when pcscd may have gone."""
    for name in ("disconnect", "release"):
        try:
            getattr(conn, name)()
        except Exception:  # already disconnected, card gone, pcscd stopped
            pass


class LocalCard:
    """An in-process card: `process(apdu) -> response` (e.g. host_tools.cards.vcard cards)."""

    def __init__(self, process: Callable[[bytes], bytes], uid: bytes, sak: int = 0x20,
                 ats: bytes | None = None, atqa: bytes | None = None) -> None:
        self._process = process
        self.uid = bytes(uid)
        self.sak = sak
        self.ats = (ats if ats is not None else ats_from_atr(b"")) if sak & 0x20 else b""
        self.atqa = atqa or (b"\x03\x44" if len(uid) == 7 else b"\x00\x04")
        self.present = True

    def transceive(self, apdu: bytes) -> bytes:
        if not self.present:
            raise CardGone()
        return self._process(apdu)


class PcscCard:
    """The card on a PC/SC reader (pyscard). UID from the reader's FF CA 00 00 00 pseudo-APDU,
    else `fallback_uid`; SAK and ATS from the ATR."""

    def __init__(self, reader_name: str, fallback_uid: bytes | None = None) -> None:
        from host_tools.cards import pcsc

        self.reader_name = reader_name
        self._conn, self._transceive = pcsc.connect(reader_name)
        atr = bytes(self._conn.getATR())
        iso = is_iso_dep_atr(atr)
        self.sak = 0x20 if iso else 0x08
        self.ats = ats_from_atr(atr) if iso else b""
        uid = fallback_uid
        try:
            r = self._transceive(UID_APDU)
        except Exception as e:  # the card left while being activated: no card, not a new one
            release_connection(self._conn)
            raise CardGone(str(e)) from e
        if len(r) >= 6 and r[-2:] == b"\x90\x00" and len(r) - 2 in (4, 7, 10):
            uid = r[:-2]
        self.uid = uid or (b"\x08" + os.urandom(3))  # random-UID cards start with 0x08
        self.atqa = b"\x03\x44" if len(self.uid) == 7 and iso else (
            b"\x00\x44" if len(self.uid) == 7 else b"\x00\x04")

    def transceive(self, apdu: bytes) -> bytes:
        if self.sak & 0x20 == 0 and apdu[:1] in (b"\x60", b"\x61", b"\x30"):
            return self._classic(apdu)
        try:
            return self._transceive(apdu)
        except Exception as e:  # CardConnectionException, NoCardException: the card left
            raise CardGone(str(e)) from e

    def _classic(self, cmd: bytes) -> bytes:
        """The PN532's raw MIFARE commands as a PC/SC reader's storage-card pseudo-APDUs:
        authenticate (0x60/0x61 block key6 uid4) = LOAD KEY + GENERAL AUTHENTICATE, read
        (0x30 block) = READ BINARY. A refusal is what the PN532 reports: the card went quiet."""
        try:
            if cmd[0] in (0x60, 0x61) and len(cmd) >= 8:
                if self._transceive(b"\xff\x82\x00\x00\x06" + cmd[2:8])[-2:] != b"\x90\x00":
                    raise CardGone("the reader refused the key")
                r = self._transceive(bytes([0xFF, 0x86, 0, 0, 5, 1, 0, cmd[1], cmd[0], 0]))
                if r[-2:] != b"\x90\x00":
                    raise CardGone("authentication failed")
                return b""
            if cmd[0] == 0x30 and len(cmd) == 2:
                r = self._transceive(bytes([0xFF, 0xB0, 0, cmd[1], 16]))
                if r[-2:] != b"\x90\x00" or len(r) != 18:
                    raise CardGone("read refused")
                return r[:-2]
        except CardGone:
            raise
        except Exception as e:
            raise CardGone(str(e)) from e
        raise CardGone("unsupported MIFARE command")

    def close(self) -> None:
        release_connection(self._conn)


class PcscSlot:
    """A PC/SC reader as the emulator's field: every InListPassiveTarget connects afresh (as a
    PN532 activates the card again), so a card put on or taken off the reader is seen then."""

    def __init__(self, reader_name: str) -> None:
        self.reader_name = reader_name
        self.card: PcscCard | None = None

    def current(self) -> PcscCard | None:
        self.close()
        try:
            self.card = PcscCard(self.reader_name)
        except Exception:  # no card (UserError), reader gone, pcscd gone
            self.card = None
        return self.card

    def close(self) -> None:
        if self.card is not None:
            self.card.close()
            self.card = None


class PN532Emulator:
    """The PN532's side of the HSU link, as a bytes-in / bytes-out engine (thread-safe)."""

    def __init__(self) -> None:
        self._parser = p.FrameParser()
        self._lock = threading.RLock()
        self._cards: list[Any] = []
        self._active: dict[int, Any] = {}
        self._last = b""
        self._more = b""
        self.errors: list[str] = []  # exceptions met while answering (answered with the error frame)
        self.faults: list[str] = []  # one-shot faults for the next responses (see inject)
        self.commands: list[int] = []  # command codes received, in order
        self.apdus = 0
        self.nacks = 0
        self.corrupt_resends = False  # answer NACKs with a bad checksum too

    # -- the field ------------------------------------------------------------------------
    def present(self, *cards: Any) -> None:
        """Put cards in the field: PC/SC reader names (str) or card objects."""
        with self._lock:
            self.remove()
            self._cards = [PcscSlot(c) if isinstance(c, str) else c for c in cards]

    def remove(self) -> None:
        """Empty the field (cards listed before stop answering)."""
        with self._lock:
            for c in self._cards:
                close = getattr(c, "close", None)
                if close is not None:
                    close()
            self._cards = []  # listed targets stay known, and now time out

    def inject(self, *faults: str) -> None:
        """Misbehave on the next responses, one fault per response: `bad_dcs`, `bad_lcs`,
        `wrong_tfi`, `wrong_code`, `no_ack`, `silence`, `garbage`, `truncated`,
        `error_frame`, `oversize`."""
        with self._lock:
            self.faults.extend(faults)

    # -- the link -------------------------------------------------------------------------
    def receive(self, data: bytes, send_ack: Callable[[bytes], None] | None = None) -> bytes:
        """Bytes from the host; returns the bytes the PN532 sends back. With `send_ack`, a
        well-formed command is ACKed through it at once, before the card is asked, as the
        chip does (a card behind PC/SC can take longer than the host's ACK timeout)."""
        out = bytearray()
        with self._lock:
            for b in data:
                ev = self._parser.feed(b)
                if ev == p.EV_NACK:
                    self.nacks += 1
                    last = self._last  # send the last response again
                    if self.corrupt_resends and last:
                        last = last[:-2] + bytes([last[-2] ^ 0x5A]) + last[-1:]
                    out += last
                elif ev == p.EV_FRAME:
                    frame = bytes(self._parser.data[:self._parser.length])
                    early = (send_ack is not None and not self.faults and len(frame) >= 2
                             and frame[0] == p.TFI_HOST)
                    if early:
                        assert send_ack is not None
                        send_ack(bytes(out) + p.ACK)
                        out = bytearray()
                    try:
                        resp = self._frame(frame)
                        out += resp[len(p.ACK):] if early and resp.startswith(p.ACK) else resp
                    except Exception as e:  # a broken card object must not stop the reader
                        self.errors.append(repr(e))
                        out += (b"" if early else p.ACK) + p.ERROR_FRAME
                # ACKs from the host, bad checksums and noise: no answer (the host times out)
        return bytes(out)

    def _frame(self, frame: bytes) -> bytes:
        if frame[0] != p.TFI_HOST or len(frame) < 2:
            return p.ERROR_FRAME
        cmd = frame[1]
        self.commands.append(cmd)
        body = self._respond(cmd, frame[2:])
        if body is None:
            return p.ACK + p.ERROR_FRAME
        resp = p.encode_frame(p.TFI_PN532, bytes([cmd + 1]) + body)
        self._last = resp
        return self._apply_fault(resp)

    def _apply_fault(self, resp: bytes) -> bytes:
        if not self.faults:
            return p.ACK + resp
        fault = self.faults.pop(0)
        if fault == "bad_dcs":
            return p.ACK + resp[:-2] + bytes([resp[-2] ^ 0x5A]) + resp[-1:]
        if fault == "bad_lcs":
            return p.ACK + resp[:4] + bytes([resp[4] ^ 0x01]) + resp[5:]
        if fault == "wrong_tfi":
            return p.ACK + p.encode_frame(p.TFI_HOST, resp[6:-2])
        if fault == "wrong_code":
            return p.ACK + p.encode_frame(p.TFI_PN532, bytes([resp[6] ^ 0x10]) + resp[7:-2])
        if fault == "no_ack":
            return b""
        if fault == "silence":
            return p.ACK
        if fault == "garbage":
            return p.ACK + bytes(os.urandom(40)).replace(b"\x00", b"\x01")
        if fault == "truncated":
            return p.ACK + resp[: len(resp) // 2]
        if fault == "error_frame":
            return p.ACK + p.ERROR_FRAME
        if fault == "oversize":
            return p.ACK + b"\x00\x00\xff\xff\xff\x04\x00\xfc" + bytes(50)
        return p.ACK + resp

    def _respond(self, cmd: int, params: bytes) -> bytes | None:
        if cmd == p.CMD_GET_FIRMWARE_VERSION:
            return FIRMWARE_VERSION
        if cmd == p.CMD_RF_CONFIGURATION:
            return b"" if params[:1] in (b"\x01", b"\x02", b"\x05") else None
        if cmd == p.CMD_SAM_CONFIGURATION:
            return b"" if params[:1] == b"\x01" else None
        if cmd == p.CMD_IN_LIST_PASSIVE_TARGET:
            return self._list(params)
        if cmd == p.CMD_IN_DATA_EXCHANGE:
            return self._exchange(params)
        if cmd == p.CMD_IN_RELEASE:
            self._active = {}
            return b"\x00"
        return None

    def _list(self, params: bytes) -> bytes | None:
        if len(params) < 2 or params[0] not in (1, 2) or params[1] != 0x00:
            return None  # only ISO 14443A 106 kbps, one or two targets
        self._active = {}
        cards = [c.current() if isinstance(c, PcscSlot) else c for c in self._cards]
        cards = [c for c in cards if c is not None][: params[0]]
        out = bytearray([len(cards)])
        for i, card in enumerate(cards):
            tg = i + 1
            self._active[tg] = card
            out += bytes([tg]) + card.atqa + bytes([card.sak, len(card.uid)]) + card.uid
            if card.sak & 0x20:
                out += card.ats
        return bytes(out)

    def _exchange(self, params: bytes) -> bytes:
        if not params:
            return b"\x27"  # command not acceptable in context
        card = self._active.get(params[0] & 0x3F)
        if card is None:
            return b"\x27"
        if not self._in_field(card):
            self._active.pop(params[0] & 0x3F, None)
            return b"\x01"  # the card left: the PN532 times out waiting for it
        if len(params) == 1 and self._more:  # the host fetches the rest of a chained answer
            return self._part(self._more)
        try:
            self.apdus += 1
            return self._part(card.transceive(params[1:]))
        except CardGone:
            self._active.pop(params[0] & 0x3F, None)
            return b"\x01"

    def _part(self, answer: bytes) -> bytes:
        """Answers longer than one frame go in parts, the status's MI bit set on all but the last."""
        room = p.MAX_DATA - 3  # TFI, response code, status
        self._more = answer[room:]
        return (b"\x40" if self._more else b"\x00") + answer[:room]

    def _in_field(self, card: Any) -> bool:
        return any(c is card or (isinstance(c, PcscSlot) and c.card is card) for c in self._cards)

    # -- serving a stream -----------------------------------------------------------------
    def connect(self, addr: tuple[str, int], timeout: float = 10.0) -> EmulatorLink:
        """Connect to the device's reader stream (TCP) and answer it from a thread."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = tcp.connect(addr, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return EmulatorLink(self, sock)

    def serve(self, sock: socket.socket) -> EmulatorLink:
        """Answer on an already connected socket (e.g. one end of a socketpair)."""
        return EmulatorLink(self, sock)

    def open_serial(self, port: str, baudrate: int = 115200) -> EmulatorLink:
        """Answer the door's reader UART wired to a serial port of this host (a USB-serial
        adapter on a bench; a pty in tests). OSError when the port cannot be opened."""
        return EmulatorLink(self, SerialByteLink(port, baudrate))


class ByteLink(Protocol):
    """What EmulatorLink needs of its stream: a socket, or a serial port through SerialByteLink."""

    def settimeout(self, value: float | None) -> None: ...
    def recv(self, n: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class SerialByteLink:
    """A serial port (pyserial) with the socket calls EmulatorLink makes: `recv` raises
    TimeoutError when nothing came, as a socket with a timeout does (a serial port never ends)."""

    def __init__(self, port: str, baudrate: int = 115200) -> None:
        import serial

        try:
            self.port: Any = serial.Serial(port, baudrate, timeout=0.2)
        except serial.SerialException as e:
            raise OSError(f"serial port {port}: {e}") from None

    def settimeout(self, value: float | None) -> None:
        self.port.timeout = value

    def recv(self, n: int) -> bytes:
        data = bytes(self.port.read(1))
        if not data:
            raise TimeoutError
        waiting = self.port.in_waiting
        return data + (bytes(self.port.read(min(waiting, n - 1))) if waiting else b"")

    def sendall(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def close(self) -> None:
        self.port.close()


class EmulatorLink:
    """A thread answering one byte stream with a PN532Emulator."""

    def __init__(self, emu: PN532Emulator, sock: ByteLink) -> None:
        self.emu = emu
        self.sock = sock
        sock.settimeout(0.2)
        self._stop = threading.Event()
        self.closed = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pn532-emulator", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data = self.sock.recv(512)
                except TimeoutError:
                    continue
                if not data:
                    break
                out = self.emu.receive(data, self.sock.sendall)
                if out:
                    self.sock.sendall(out)
        except OSError as e:
            if not self._stop.is_set():
                self.error = e
        finally:
            self.closed.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> EmulatorLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SocketStream:
    """A blocking stream over a socket for `firmware.pn532.PN532` on CPython (tests, bench)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.sock.sendall(data)
        return len(data)

    def read(self, n: int, timeout_ms: int) -> bytes | None:
        self.sock.settimeout(max(timeout_ms, 1) / 1000)
        try:
            data = self.sock.recv(n)
        except TimeoutError:
            return b""
        return data if data else None

    def reset_input(self) -> None:
        self.sock.setblocking(False)
        try:
            while self.sock.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        finally:
            self.sock.setblocking(True)
