"""The card's side of ISO/IEC 14443-4 (the block protocol under every APDU), for readers that
run the protocol themselves and reach the card through PN532 InCommunicateThru (nfcpy, libnfc
with `NP_AUTO_ISO14443_4` off).

The PN532 normally does this work itself (automatic RATS, then InDataExchange); a host that
clears `fAutomaticRATS` with SetParameters sends the raw frames below instead, CRC added and
checked by the chip's CIU. `IsoDepCard` turns those frames into APDUs for a card object with
`transceive(apdu) -> response` and `ats`, and back:

    RATS   E0 xx          -> the ATS (FSDI in xx's high nibble sets the reader's frame size)
    I      02|03 [CID] [NAD] INF, chaining bit 0x10   -> I-blocks (or R(ACK) while chaining)
    R(ACK) A2|A3, R(NAK) B2|B3                       -> next chained part, or last block again
    S(DESELECT) C2        -> C2, and the card waits for the next activation

ISO/IEC 14443-4:2018 §7.5 (block format) and §7.5.4 (the PICC's rules, numbered as there).
"""

from __future__ import annotations

from typing import Any

FSD = (16, 24, 32, 40, 48, 64, 96, 128, 256)  # frame size for FSDI 0..8 (higher: RFU, as 256)


class NoAnswer(Exception):
    """The card stays quiet (wrong frame, not activated, deselected): the reader times out."""


class IsoDepCard:
    """One card's ISO-DEP state between RATS and DESELECT."""

    def __init__(self, card: Any) -> None:
        self.card = card
        self.active = False  # RATS answered, not deselected
        self.fsd = 256
        self.block = 1  # the PICC's block number: toggled by each I-block it receives (rule D)
        self._command = bytearray()  # a chained command being received
        self._answer = b""  # the rest of a chained answer
        self._last = b""  # the last block sent, for R(NAK) (rule 11)

    def frame(self, data: bytes) -> bytes:
        """One frame from the reader; returns the card's frame, or raises NoAnswer."""
        if not data:
            raise NoAnswer
        if not self.active:
            if data[0] == 0xE0 and len(data) == 2:
                return self._rats(data[1])
            raise NoAnswer  # layer 3 only: anything else is not for an ISO-DEP card here
        pcb = data[0]
        prologue = 1 + bool(pcb & 0x08) + bool(pcb & 0x04 and pcb & 0xC0 == 0)
        if len(data) < prologue:
            raise NoAnswer
        cid = data[1:2] if pcb & 0x08 else b""
        kind = pcb & 0xE2
        if kind == 0x02:
            return self._i_block(pcb, cid, data[prologue:])
        if pcb & 0xE6 == 0xA2:
            return self._r_block(pcb, cid)
        if pcb & 0xF7 == 0xC2:  # S(DESELECT)
            self.active = False
            self._command = bytearray()
            self._answer = b""
            return bytes([pcb]) + cid
        raise NoAnswer  # S(WTX) from the reader, or RFU: protocol error, the card ignores it

    def _rats(self, param: int) -> bytes:
        self.active = True
        self.fsd = FSD[min(param >> 4, 8)]
        self.block = 1
        self._command = bytearray()
        self._answer = b""
        ats = bytes(getattr(self.card, "ats", b"")) or b"\x05\x78\x77\x81\x02"
        self._last = ats
        return ats

    def _send(self, block: bytes) -> bytes:
        self._last = block
        return block

    def _i_block(self, pcb: int, cid: bytes, inf: bytes) -> bytes:
        self.block = pcb & 1  # rule D: the PICC's number follows the reader's I-block
        self._command += inf
        if pcb & 0x10:  # the reader chains: acknowledge this part (rule 2)
            return self._send(bytes([0xA2 | (0x08 if cid else 0) | self.block]) + cid)
        apdu = bytes(self._command)
        self._command = bytearray()
        self._answer = bytes(self.card.transceive(apdu))
        return self._next_part(cid)

    def _next_part(self, cid: bytes) -> bytes:
        room = self.fsd - 3 - len(cid)  # PCB, CID, CRC
        part, self._answer = self._answer[:room], self._answer[room:]
        chaining = 0x10 if self._answer else 0
        return self._send(bytes([0x02 | chaining | (0x08 if cid else 0) | self.block]) + cid + part)

    def _r_block(self, pcb: int, cid: bytes) -> bytes:
        same = pcb & 1 == self.block
        if pcb & 0x10 == 0:  # R(ACK)
            if same:
                return self._last  # rule 11: the reader did not get the last block
            if self._answer:  # rules 13 and E: the reader wants the next part
                self.block ^= 1
                return self._next_part(cid)
            raise NoAnswer
        # R(NAK): rule 11, the last block again if the numbers agree, else R(ACK) (presence check)
        if same:
            return self._last
        return self._send(bytes([0xA2 | (0x08 if cid else 0) | self.block]) + cid)
