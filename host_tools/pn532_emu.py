"""PN532 emulator: the reader chip on the host side of the device's reader UART.

It parses the firmware's PN532 host frames (UM0701-02, the same codec as `card_reader/pn532.py`),
answers each information frame with an ACK then a real PN532 response frame, and relays
InDataExchange payloads (APDUs) to a card: a PC/SC reader through pyscard (a virtual card on
vsmartcard's vpcd, or a physical card on a bench reader), or any in-process card object.

    emu = PN532Emulator()
    emu.present("Virtual PCD 00 01")      # whatever card is on that PC/SC reader is in the field
    emu.present(card_a, card_b)           # two cards: InListPassiveTarget reports both
    emu.remove()                          # empty field: InListPassiveTarget reports 0 targets
    PN532Emulator(field_timing=FieldTiming())  # answer when a real PN532 and DESFire EV2 would
    link = emu.connect(("127.0.0.1", port))   # serve the device's reader stream (thread)
    link = emu.open_serial("/dev/ttyUSB1")    # or the door's reader UART wired to a serial port
    link = emu.serve_fd(master_fd)            # or a pty's master: host software on the other end
    link.close()
    replies = emu.receive(data)           # or drive it by hand: bytes in, bytes out
    replies = emu.poll()                  # what a held command answers once a card came

It behaves as the chip does for generic host stacks (nfcpy, Adafruit's CircuitPython driver,
libnfc), not only for our firmware: Diagnose, GetGeneralStatus, ReadRegister/WriteRegister,
SetSerialBaudRate, SetParameters, PowerDown, every RFConfiguration item with its length, the
power-up defaults (InListPassiveTarget waits for a card until MaxRetries is set, automatic RATS
until SetParameters clears it) and InCommunicateThru carrying ISO/IEC 14443-4 blocks
(`host_tools.iso14443_4`). UM0701-02 §7 is the reference for every command.

A card object has `uid`, `sak`, `atqa`, `ats` and `transceive(apdu) -> response`;
`PcscCard(reader)` and `LocalCard(...)` are the two provided.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from card_reader import pn532 as p
from host_tools import tcp
from host_tools.field_timing import PN532_EMPTY_TRY_S, FieldTiming
from host_tools.iso14443_4 import IsoDepCard, NoAnswer

FIRMWARE_VERSION = b"\x32\x01\x06\x07"  # PN532, v1.6, supports ISO 14443A/B and 18092
UID_APDU = b"\xff\xca\x00\x00\x00"

# Commands beyond the firmware's own set (UM0701-02 §7.2, §7.3).
CMD_DIAGNOSE = 0x00
CMD_GET_GENERAL_STATUS = 0x04
CMD_READ_REGISTER = 0x06
CMD_WRITE_REGISTER = 0x08
CMD_READ_GPIO = 0x0C
CMD_WRITE_GPIO = 0x0E
CMD_SET_SERIAL_BAUD_RATE = 0x10
CMD_SET_PARAMETERS = 0x12
CMD_POWER_DOWN = 0x16
CMD_IN_COMMUNICATE_THRU = 0x42
CMD_IN_DESELECT = 0x44
CMD_IN_SELECT = 0x54

FLAG_AUTOMATIC_RATS = 0x10
DEFAULT_FLAGS = 0x14  # SetParameters after power-up: fAutomaticATR_RES | fAutomaticRATS
BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1288000)
# RFConfiguration: item -> length of its ConfigurationData (UM0701-02 §7.3.1).
RF_ITEM_LENGTHS = {0x01: 1, 0x02: 3, 0x04: 1, 0x05: 3, 0x0A: 11, 0x0B: 8, 0x0C: 3, 0x0D: 9}
RETRY_FOREVER = 0xFF  # MxRtyPassiveActivation after power-up: InListPassiveTarget waits for a card
# CIU registers a host stack reads or sets (PN532 datasheet §8.6; nfcpy reads these by name).
REG_TX_MODE, REG_RX_MODE, REG_TX_CONTROL, REG_TX_AUTO = 0x6302, 0x6303, 0x6304, 0x6305
REG_FIFO_DATA, REG_FIFO_LEVEL = 0x6339, 0x633A
SENS_REQ = 0x26  # left in the CIU's FIFO when no card answered the last activation
HELD: Any = object()  # a command the chip keeps working on (InListPassiveTarget, empty field)
STATUS_OK, STATUS_TIMEOUT, STATUS_BAD_PARAMETER, STATUS_NOT_IN_CONTEXT = 0x00, 0x01, 0x10, 0x27


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
        self._lock = threading.Lock()  # the link's reader and its held-command poller

    def current(self) -> PcscCard | None:
        with self._lock:
            return self._connect()

    def activated(self) -> PcscCard | None:
        """The card connected already, else a fresh connection: for a held command, which
        must not take the card from under a command the host has sent meanwhile."""
        with self._lock:
            return self.card if self.card is not None else self._connect()

    def _connect(self) -> PcscCard | None:
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


@dataclass
class FrameTime:
    """One host frame on a field-timed link: what it asked and when (time.monotonic())."""

    cmd: int
    ins: int | None  # the DESFire command of an APDU, else None
    arrived: float  # its first bytes reached the emulator
    received: float  # its last byte is off the HSU wire (the chip starts on it)
    answered: float  # the answer's last byte is sent


class PN532Emulator:
    """The PN532's side of the HSU link, as a bytes-in / bytes-out engine (thread-safe).

    With `field_timing` (host_tools.field_timing), a link serving it paces the HSU wire and
    delays each answer by the air and card time a real PN532 and DESFire EV2 would take, and
    records every frame's timing in `trace`; the engine itself (receive/poll) stays instant
    and only adds up `pending_s`, the modelled time of the answers it just produced."""

    def __init__(self, field_timing: FieldTiming | None = None) -> None:
        self.field_timing = field_timing
        self.pending_s = 0.0
        self.trace: deque[FrameTime] = deque(maxlen=512)
        self.placed_at = 0.0
        self.held_answer_s = 0.0
        self.last_frame: tuple[int, int | None] | None = None  # (cmd, DESFire INS) just handled
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
        self.reset_chip()

    def reset_chip(self) -> None:
        """The chip's state after power-up (what a host may have changed since)."""
        with self._lock:
            self.flags = DEFAULT_FLAGS
            self.rf_items: dict[int, bytes] = {0x05: bytes([0xFF, 0x01, RETRY_FOREVER])}
            self.registers: dict[int, int] = {REG_TX_MODE: 0x80, REG_RX_MODE: 0x80,
                                              REG_TX_CONTROL: 0x83, REG_TX_AUTO: 0x40}
            self.baudrate = 115200
            self.on_baudrate: Callable[[int], None] | None = None  # the link changes its rate
            self._baud_after_ack: int | None = None
            self._held: bytes | None = None  # an InListPassiveTarget waiting for a card
            self._held_gen = 0  # counts the commands held, so poll() sees one replaced
            self._iso_dep: dict[int, IsoDepCard] = {}
            self._thru_target = 0  # the target InCommunicateThru talks to

    # -- the field ------------------------------------------------------------------------
    def present(self, *cards: Any) -> None:
        """Put cards in the field: PC/SC reader names (str) or card objects."""
        with self._lock:
            self.remove()
            self._cards = [PcscSlot(c) if isinstance(c, str) else c for c in cards]
            self.placed_at = time.monotonic()  # field timing: when a held command can see them

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
                elif ev == p.EV_ACK:  # the host aborts a held command, or confirms a baud change
                    self._held = None
                    if self._baud_after_ack is not None:
                        self.baudrate, self._baud_after_ack = self._baud_after_ack, None
                        if self.on_baudrate is not None:
                            self.on_baudrate(self.baudrate)
                elif ev == p.EV_FRAME:
                    self._held = None  # a new command ends one still waiting
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
        had_iso_dep = any(getattr(c, "sak", 0) & 0x20 for c in self._active.values())
        body = self._respond(cmd, frame[2:])
        self.last_frame = (cmd, _desfire_ins(cmd, frame[2:]))
        if self.field_timing is not None and body is not HELD:
            self.pending_s += self._modelled_s(cmd, frame[2:], body, had_iso_dep)
        if body is None:
            return p.ACK + p.ERROR_FRAME
        if body is HELD:
            return p.ACK  # the answer comes from poll() once a card is in the field
        resp = p.encode_frame(p.TFI_PN532, bytes([cmd + 1]) + body)
        self._last = resp
        return self._apply_fault(resp)

    def _modelled_s(self, cmd: int, params: bytes, body: bytes | None, had_iso_dep: bool) -> float:
        """What a real chip and card take for this command (HSU wire time apart)."""
        ft = self.field_timing
        assert ft is not None
        if body is None:
            return ft.command_s()
        if cmd == p.CMD_IN_LIST_PASSIVE_TARGET:
            return ft.list_s(self._found(), self.rf_items[0x05][2] + 1)
        if cmd == p.CMD_IN_DATA_EXCHANGE and len(params) > 1 and body[:1] in (b"\x00", b"\x40"):
            return ft.exchange_s(params[1:], len(body) - 1)
        if cmd == CMD_IN_COMMUNICATE_THRU and body[:1] == b"\x00":
            return ft.exchange_s(params, len(body) - 1)
        if cmd == p.CMD_IN_RELEASE:
            return ft.release_s(had_iso_dep)
        return ft.command_s()

    def _found(self) -> list[tuple[int, bytes | None]]:
        """The targets just activated: UID length, ATS when the chip sent RATS."""
        return [(len(c.uid), c.ats if c.sak & 0x20 and self.flags & FLAG_AUTOMATIC_RATS else None)
                for _, c in sorted(self._active.items())]

    def take_pending(self) -> float:
        """The modelled time of the answers produced since the last call (field timing)."""
        with self._lock:
            t, self.pending_s = self.pending_s, 0.0
            return t

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

    def holding(self) -> bool:
        """Whether an InListPassiveTarget is waiting for a card."""
        return self._held is not None

    def activate_held(self) -> None:
        """For a held command, connect the PC/SC cards now in the field. Connecting (and
        reading the UID) can take longer than a host waits for an ACK, so the link does it
        in a thread of its own, outside the lock, and poll(activate=False) answers from it."""
        with self._lock:
            if self._held is None:
                return
            slots = [c for c in self._cards if isinstance(c, PcscSlot)]
        for slot in slots:
            slot.activated()

    def poll(self, activate: bool = True) -> bytes:
        """The answer to a held InListPassiveTarget once a card came into the field, else b"".
        The link calls this while a command is held, as the chip keeps trying on its own;
        without `activate` a PC/SC card counts only once activate_held() connected it. An
        answer for a command aborted or replaced meanwhile is dropped. With field timing
        `held_answer_s` is then the modelled time of the answer."""
        with self._lock:
            if self._held is None or not self._cards:
                return b""
            gen, cards = self._held_gen, list(self._cards)
        present = [(c.activated() if activate else c.card) if isinstance(c, PcscSlot) else c
                   for c in cards]
        with self._lock:
            if self._held is None or self._held_gen != gen or self._cards != cards:
                return b""
            body = self._list(self._held, hold=False, present=present)
            if body is None or body[:1] == b"\x00":
                return b""
            self._held = None
            if self.field_timing is not None:
                self.held_answer_s = self.field_timing.list_s(self._found(), 1)
            self.last_frame = (p.CMD_IN_LIST_PASSIVE_TARGET, None)
            resp = p.encode_frame(p.TFI_PN532, bytes([p.CMD_IN_LIST_PASSIVE_TARGET + 1]) + body)
            self._last = resp
            return resp

    def _respond(self, cmd: int, params: bytes) -> bytes | None:
        handler = self._handlers().get(cmd)
        return handler(params) if handler is not None else None

    def _handlers(self) -> dict[int, Callable[[bytes], bytes | None]]:
        return {
            CMD_DIAGNOSE: self._diagnose,
            p.CMD_GET_FIRMWARE_VERSION: lambda _: FIRMWARE_VERSION,
            CMD_GET_GENERAL_STATUS: self._general_status,
            CMD_READ_REGISTER: self._read_register,
            CMD_WRITE_REGISTER: self._write_register,
            CMD_READ_GPIO: lambda params: b"\xff\xff\x00" if not params else None,
            CMD_WRITE_GPIO: lambda params: b"" if len(params) == 2 else None,
            CMD_SET_SERIAL_BAUD_RATE: self._set_baud_rate,
            CMD_SET_PARAMETERS: self._set_parameters,
            p.CMD_SAM_CONFIGURATION: lambda params: b"" if params[:1] == b"\x01" else None,
            CMD_POWER_DOWN: lambda params: b"\x00" if 1 <= len(params) <= 2 else None,
            p.CMD_RF_CONFIGURATION: self._rf_configuration,
            p.CMD_IN_LIST_PASSIVE_TARGET: self._list,
            p.CMD_IN_DATA_EXCHANGE: self._exchange,
            CMD_IN_COMMUNICATE_THRU: self._communicate_thru,
            CMD_IN_DESELECT: self._deselect,
            CMD_IN_SELECT: self._select,
            p.CMD_IN_RELEASE: self._release,
        }

    def _diagnose(self, params: bytes) -> bytes | None:
        if not params:
            return None
        test = params[0]
        if test == 0x00:  # communication line test: the data comes back
            return params
        if test in (0x01, 0x02, 0x06):  # ROM, RAM, antenna: all good
            return b"\x00"
        if test == 0x05:  # ISO 14443-4 card presence
            card = self._active.get(self._thru_target or 1)
            return b"\x00" if card is not None and self._in_field(card) else b"\x01"
        return None

    def _general_status(self, params: bytes) -> bytes | None:
        if params:
            return None
        field = 1 if self.rf_items.get(0x01, b"\x01")[0] & 0x01 or self._active else 0
        out = bytearray([0x00, field, len(self._active)])
        for tg in sorted(self._active):
            out += bytes([tg, 0x00, 0x00, 0x00])  # 106 kbps both ways, ISO 14443A
        return bytes(out + b"\x00")  # SAM status

    def _read_register(self, params: bytes) -> bytes | None:
        if not params or len(params) % 2:
            return None
        out = bytearray()
        for i in range(0, len(params), 2):
            addr = int.from_bytes(params[i:i + 2], "big")
            if addr == REG_FIFO_DATA:
                out.append(SENS_REQ if not self._active else 0x00)
            elif addr == REG_FIFO_LEVEL:
                out.append(0x00)
            else:
                out.append(self.registers.get(addr, 0x00))
        return bytes(out)

    def _write_register(self, params: bytes) -> bytes | None:
        if not params or len(params) % 3:
            return None
        for i in range(0, len(params), 3):
            self.registers[int.from_bytes(params[i:i + 2], "big")] = params[i + 2]
        return b""

    def _set_baud_rate(self, params: bytes) -> bytes | None:
        if len(params) != 1 or params[0] >= len(BAUD_RATES):
            return None
        self._baud_after_ack = BAUD_RATES[params[0]]  # takes effect after the host's ACK
        return b""

    def _set_parameters(self, params: bytes) -> bytes | None:
        if len(params) != 1:
            return None
        self.flags = params[0]
        return b""

    def _rf_configuration(self, params: bytes) -> bytes | None:
        if not params or RF_ITEM_LENGTHS.get(params[0]) != len(params) - 1:
            return None
        self.rf_items[params[0]] = bytes(params[1:])
        if params[0] == 0x01:  # RF field on (bit 1): the transmitters in CIU_TxControl follow
            tx = self.registers.get(REG_TX_CONTROL, 0x80) & 0xFC
            self.registers[REG_TX_CONTROL] = tx | (0x03 if params[1] & 0x02 else 0x00)
        return b""

    def _list(self, params: bytes, hold: bool = True, present: list[Any] | None = None) -> Any:
        if len(params) < 2 or params[0] not in (1, 2):
            return None
        brty = params[1]
        if brty > 4:
            return None
        self._active = {}
        self._iso_dep = {}
        if present is None:
            present = [c.current() if isinstance(c, PcscSlot) else c for c in self._cards]
        cards = [] if brty != 0 else present
        cards = [c for c in cards if c is not None][: params[0]]
        if not cards and hold and self.rf_items[0x05][2] == RETRY_FOREVER:
            self._held = bytes(params)
            self._held_gen += 1
            return HELD
        out = bytearray([len(cards)])
        for i, card in enumerate(cards):
            tg = i + 1
            self._active[tg] = card
            out += bytes([tg]) + card.atqa + bytes([card.sak, len(card.uid)]) + card.uid
            if card.sak & 0x20 and self.flags & FLAG_AUTOMATIC_RATS:
                out += card.ats
            elif card.sak & 0x20:
                self._iso_dep[tg] = IsoDepCard(card)  # the host sends RATS itself (Thru)
        self._thru_target = 1 if cards else 0
        return bytes(out)

    def _communicate_thru(self, params: bytes) -> bytes:
        card = self._active.get(self._thru_target)
        dep = self._iso_dep.get(self._thru_target)
        if card is None or not params:
            return bytes([STATUS_NOT_IN_CONTEXT if card is None else STATUS_BAD_PARAMETER])
        if not self._in_field(card):
            return bytes([STATUS_TIMEOUT])
        if dep is None:  # activated by the chip (automatic RATS): raw frames are APDUs
            dep = self._iso_dep[self._thru_target] = IsoDepCard(card)
            dep.active = True
        try:
            if dep.active and params[:1] != b"\xe0":
                self.apdus += 1
            return b"\x00" + dep.frame(params)
        except (NoAnswer, CardGone):
            return bytes([STATUS_TIMEOUT])

    def _deselect(self, params: bytes) -> bytes | None:
        if len(params) != 1:
            return None
        return b"\x00" if params[0] in self._active or params[0] == 0 else bytes([STATUS_NOT_IN_CONTEXT])

    def _select(self, params: bytes) -> bytes | None:
        if len(params) != 1:
            return None
        if params[0] not in self._active:
            return bytes([STATUS_NOT_IN_CONTEXT])
        self._thru_target = params[0]
        return b"\x00"

    def _release(self, params: bytes) -> bytes | None:
        self._active = {}
        self._iso_dep = {}
        self._thru_target = 0
        return b"\x00"

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
        adapter on a bench; a pty in tests). OSError when the port cannot be opened.
        SetSerialBaudRate changes the port's rate once the host has acknowledged it."""
        link = SerialByteLink(port, baudrate)
        self.on_baudrate = link.set_baudrate
        return EmulatorLink(self, link)

    def serve_fd(self, fd: int) -> EmulatorLink:
        """Answer on a file descriptor, e.g. a pty's master for host software on its slave."""
        return EmulatorLink(self, FdByteLink(fd))


def _desfire_ins(cmd: int, params: bytes) -> int | None:
    """The DESFire command an InDataExchange carries (ISO-wrapped 90 INS .. or native)."""
    if cmd != p.CMD_IN_DATA_EXCHANGE or len(params) < 2:
        return None
    apdu = params[1:]
    return apdu[1] if apdu[0] == 0x90 and len(apdu) >= 5 else apdu[0]


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

    def set_baudrate(self, baudrate: int) -> None:
        self.port.baudrate = baudrate

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


class FdByteLink:
    """A file descriptor (a pty's master) with the socket calls EmulatorLink makes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.timeout: float | None = None

    def settimeout(self, value: float | None) -> None:
        self.timeout = value

    def recv(self, n: int) -> bytes:
        import select

        if not select.select([self.fd], [], [], self.timeout)[0]:
            raise TimeoutError
        try:
            return os.read(self.fd, n)
        except OSError:  # EIO: the slave side was closed (no reader); keep waiting for one
            time.sleep(self.timeout or 0.01)
            raise TimeoutError from None

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        os.close(self.fd)


def sleep_until(t: float) -> None:
    """Sleep until time.monotonic() reaches `t` (never returns early)."""
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(left)


POLL_S = 0.01  # how often a held command looks for a card (the chip retries about this often)
HELD_POLL_S = 0.001  # the same with field timing: the answer is then timed from the chip's tries


class EmulatorLink:
    """A thread answering one byte stream with a PN532Emulator."""

    def __init__(self, emu: PN532Emulator, sock: ByteLink) -> None:
        self.emu = emu
        self.sock = sock
        sock.settimeout(POLL_S)
        self._stop = threading.Event()
        self.closed = threading.Event()
        self.error: BaseException | None = None
        self._rx_free = 0.0  # field timing: when the HSU wire from the host is free again
        self._tx_free = 0.0  # ... and the wire to the host
        self._held_since = 0.0  # field timing: when the chip began trying for a held command
        self._send_lock = threading.RLock()  # the reader and the held-command poller both send
        self._thread = threading.Thread(target=self._run, name="pn532-emulator", daemon=True)
        self._poller = threading.Thread(target=self._poll_held, name="pn532-held", daemon=True)
        self._thread.start()
        self._poller.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data = self.sock.recv(512)
                except TimeoutError:
                    self._poll()
                    continue
                if not data:
                    break
                if self.emu.field_timing is None:
                    out = self.emu.receive(data, self._send)
                    if out:
                        self._send(out)
                else:
                    self._timed(data)
        except OSError as e:
            if not self._stop.is_set():
                self.error = e
        finally:
            self.closed.set()

    def _timed(self, data: bytes) -> None:
        """Field timing: the host's bytes take their wire time to arrive before the chip acts
        on them; the answer leaves once the modelled air and card time has passed, paced."""
        ft = self.emu.field_timing
        assert ft is not None
        arrived = time.monotonic()
        received = max(arrived, self._rx_free) + len(data) * ft.byte_s()
        self._rx_free = received
        sleep_until(received)
        self.emu.take_pending()
        self.emu.last_frame = None
        out = self.emu.receive(data, self.send_paced)
        self._answer(out, received)
        frame = self.emu.last_frame
        if frame is not None:
            self.emu.trace.append(FrameTime(frame[0], frame[1], arrived, received, time.monotonic()))
        if self.emu.holding():
            self._held_since = received
            self.sock.settimeout(HELD_POLL_S)

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def _poll(self) -> None:
        """Between reads: answer a held command once a card is there, as the chip keeps
        trying (after the host's bytes, so a command that replaced it wins)."""
        timed = self.emu.field_timing is not None
        held = self.emu.poll(activate=False) if self.emu.holding() else b""
        if held and timed:
            self._answer_held(held)
        elif held:
            self._send(held)
        # With field timing, look often enough to answer on time.
        self.sock.settimeout(HELD_POLL_S if timed and self.emu.holding() else POLL_S)

    def _poll_held(self) -> None:
        """While a command is held, connect PC/SC cards in the field, in a thread of its own
        so the link keeps reading (and ACKing) the host meanwhile."""
        while not self._stop.is_set():
            if self.emu.holding():
                self.emu.activate_held()
            self._stop.wait(POLL_S)

    def _answer_held(self, out: bytes) -> None:
        """Field timing: a held InListPassiveTarget finds the card at the chip's first
        activation try after the card was placed (the chip tries back to back from the
        command on, one try per PN532_EMPTY_TRY_S), then activates it; the trace records
        that try as the frame's arrival."""
        period = PN532_EMPTY_TRY_S
        since = self._held_since
        placed = max(self.emu.placed_at, since)
        tries = -(-(placed - since) // period)  # ceil: the first try starting at or after it
        found = since + tries * period
        sleep_until(found + self.emu.held_answer_s)
        self.send_paced(out)
        self.emu.trace.append(FrameTime(p.CMD_IN_LIST_PASSIVE_TARGET, None, found, found,
                                        time.monotonic()))

    def _answer(self, out: bytes, start: float) -> None:
        if self.emu.field_timing is None:
            if out:
                self._send(out)
            return
        sleep_until(start + self.emu.take_pending())
        if out:
            self.send_paced(out)

    def send_paced(self, data: bytes) -> None:
        """Send as a UART at the field timing's rate would: byte i leaves no earlier than
        (i + 1) byte times after the wire is free (bytes already due go out together)."""
        with self._send_lock:
            self._send_paced(data)

    def _send_paced(self, data: bytes) -> None:
        ft = self.emu.field_timing
        bs = ft.byte_s() if ft is not None else 0.0
        if bs <= 0:
            self.sock.sendall(data)
            return
        start = max(time.monotonic(), self._tx_free)
        sent = 0
        while sent < len(data):
            due = min(len(data), int((time.monotonic() - start) / bs))
            if due > sent:
                self.sock.sendall(data[sent:due])
                sent = due
            else:
                sleep_until(start + (sent + 1) * bs)
        self._tx_free = start + len(data) * bs

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._poller.join(5)
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> EmulatorLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SocketStream:
    """A blocking stream over a socket for `host_tools.pn532_sync.PN532` on CPython (tests, bench)."""

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
