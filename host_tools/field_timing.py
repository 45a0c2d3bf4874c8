"""How long a real PN532 and a real DESFire EV2 take: the timing model of the emulator's field mode.

The virtual reader link is as fast as loopback TCP; a door in the field is not. This model gives
the time a frame spends on the PN532's HSU wire and the time a command spends in the air and in
the card, so `PN532Emulator(field_timing=FieldTiming())` answers when a real reader would and
the virtual door's decision time predicts the field's.

Sources (each constant below names its own):
- [UM0701] NXP UM0701-02, PN532 User Manual rev. 02: HSU at 115,200 baud by default (§6.2.3),
  8 data bits, no parity, 1 stop bit; frame format (§6.2.1).
- [14443-2] ISO/IEC 14443-2, Type A at 106 kbit/s: one bit (etu) = 128/fc, fc = 13.56 MHz
  (9.44 µs); a standard frame is SOF, 9 bits per byte (8 data + odd parity), EOF; a short frame
  (REQA) 7 data bits.
- [14443-3] ISO/IEC 14443-3 Type A: frame delay time PCD -> PICC (FDT) n*128 + 84 fc with
  n = 9 (last bit 1: 1172/fc, 86.4 µs) or 20 + 84 = 1236/fc when the last bit is 0; this
  model takes 1172/fc for every answer and counts the card's processing separately. Activation:
  REQA/ATQA, anticollision and SELECT per cascade level (a 7-byte UID takes two levels).
- [14443-4] ISO/IEC 14443-4: RATS/ATS; I-blocks PCB + INF + CRC_A (no CID, no NAD: the PN532
  sends RATS with CID 0 and sends no CID byte then); SFGT = (256*16/fc) * 2^SFGI; frames above
  FSC are chained, each chained block acknowledged by an R(ACK) block.
- [MF3DX2] NXP MF3D(H)x2 MIFARE DESFire EV2 data sheet: 106 kbit/s default rate, FSCI configurable
  (delivered as 64-byte frames, the ATS widely logged for EV1/EV2 is 06 75 77 81 02 80: FSCI 5,
  TB 0x81 = FWI 8, SFGI 1), "fast programming cycles (erase/write) 1 ms".
- [PM3-SNIFF] RfidResearchGroup/proxmark3, traces/hf_mfdes_sniff.trace (added in commit
  a79b23edc408, 2022-01-30; "Sniff of HID reader reading a MIFARE DESFire SIO card"): a
  Proxmark3 sniff of a DESFire with that same ATS, every frame timed in carrier periods (1/fc).
  From the end of the reader's frame to the start of the card's answer, less FDT: ISO
  SelectFile by name 1.16 ms, SelectApplication 0.69 ms, AuthenticateISO (2K3DES) part 1
  2.38 ms and part 2 1.94 ms, GetFileSettings 0.93 ms, ReadData (enciphered, 5 bytes) 0.98 ms.
  Its frame lengths also check the air model above (tests/host/unit/test_field_timing.py): each is
  within 1.5 etu of air_frame_s, the model the longer (the sniffer stops at the last modulation).
- [FWT] ISO/IEC 14443-4: a card answers within FWT = (256 * 16 / fc) * 2^FWI or asks for more
  time (S(WTX)); FWI 8 from the ATS gives 77.3 ms, the published upper bound on any command.

No NXP document publishes per-command processing times of the DESFire EV2 or the PN532's
firmware overhead per command, and no published trace shows the EV2's AES commands
(AuthenticateEV2First, CommMode.MAC/Full) timed; the constants marked UNSOURCED are
conservative choices (each above the nearest command [PM3-SNIFF] timed, on the slow side of
what an asynchronous-CPU secure element with an AES coprocessor does) and named so a
measurement on a bench can replace them.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- the HSU wire [UM0701 §6.2.3] ----------------------------------------------------------
HSU_BAUD = 115_200
UART_BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit

# -- the air at 106 kbit/s [14443-2, 14443-3] ----------------------------------------------
FC_HZ = 13_560_000
ETU_S = 128 / FC_HZ  # one bit: 9.44 µs
BITS_PER_BYTE_AIR = 9  # 8 data bits + odd parity
SOF_EOF_BITS = 2  # start of frame + end of frame, one bit period each
SHORT_FRAME_BITS = 9  # REQA/WUPA: SOF, 7 data bits, EOF
FDT_S = 1172 / FC_HZ  # PCD -> PICC frame delay time, last bit 1: 86.4 µs
CRC_A_BYTES = 2
PCB_BYTES = 1

# -- the DESFire EV2's ISO-DEP parameters [MF3DX2, 14443-4] --------------------------------
DESFIRE_ATS = bytes.fromhex("067577810280")
DESFIRE_FSC = 64  # FSCI 5
DESFIRE_SFGI = 1
SFGT_S = (256 * 16 / FC_HZ) * 2 ** DESFIRE_SFGI  # 604 µs after the ATS before the next frame
EEPROM_WRITE_S = 1e-3  # [MF3DX2] programming cycle (erase/write)

FWT_S = (256 * 16 / FC_HZ) * 2 ** 8  # [FWT] FWI 8: 77.3 ms, no command may take longer

# -- the card's processing per DESFire command ---------------------------------------------
# From the end of the command's frame (less FDT) to the start of its answer. Sourced where
# [PM3-SNIFF] timed the same command; UNSOURCED (conservative, above the nearest timed
# command) elsewhere.
CARD_DEFAULT_S = 3e-3  # UNSOURCED: any command not listed
CARD_PROCESSING_S = {
    0x5A: 0.8e-3,  # SelectApplication: [PM3-SNIFF] 0.69 ms, rounded up
    0x64: 1.5e-3,  # GetKeyVersion: UNSOURCED (GetFileSettings, as plain, took 0.93 ms)
    0x71: 4e-3,  # AuthenticateEV2First part 1: UNSOURCED; RndB from the TRNG, AES-encrypted
    #             (AuthenticateISO part 1, the 2K3DES counterpart, took 2.38 ms)
    0xAF: 8e-3,  # AuthenticateEV2First part 2: UNSOURCED; decrypt, check RndA', encrypt, derive
    #             both session keys (two CMACs) - the heaviest command on the door's path
    #             (AuthenticateISO part 2, without the session-key CMACs, took 1.94 ms)
    0x51: 3e-3,  # GetCardUID (CommMode.Full): UNSOURCED; MAC check, encrypt, MAC the answer
    0xAD: 3e-3,  # ReadData (CommMode.MAC): UNSOURCED (an enciphered 5-byte ReadData took 0.98 ms)
    0x6F: 1.5e-3,  # GetFileIDs: UNSOURCED
    0x60: 1.5e-3,  # GetVersion: UNSOURCED
    0xC4: 6e-3 + EEPROM_WRITE_S,  # ChangeKey: UNSOURCED; decrypt, CRC check, write the key
}
# -- UNSOURCED, conservative: the PN532's own time ------------------------------------------
# The PN532 firmware's own time per command (parsing the host frame, setting up the CIU,
# building the answer), on top of the wire and the air. No published figure.
PN532_COMMAND_S = 1e-3
# One InListPassiveTarget try in an empty field: REQA, the CIU's receive timeout, field
# handling. No published figure. Polling with MaxRetries n, an empty field costs 1 + n tries;
# with MaxRetries FF the chip tries back to back and finds a card at the first try after it came.
PN532_EMPTY_TRY_S = 5e-3
# The card's start-up in the field before it answers REQA is not counted: a card is "presented"
# when it first could answer.


def uart_byte_s(baud: int = HSU_BAUD) -> float:
    """One byte on the HSU wire: 10 bits at `baud` (86.8 µs at 115,200)."""
    return UART_BITS_PER_BYTE / baud


def wire_s(nbytes: int, baud: int = HSU_BAUD) -> float:
    """A frame of `nbytes` bytes on the HSU wire, back to back."""
    return nbytes * uart_byte_s(baud)


def air_frame_s(nbytes: int) -> float:
    """A standard frame of `nbytes` bytes (CRC included when it has one) at 106 kbit/s."""
    return (SOF_EOF_BITS + BITS_PER_BYTE_AIR * nbytes) * ETU_S


def short_frame_s() -> float:
    return SHORT_FRAME_BITS * ETU_S


def iblock_air_s(inf_len: int) -> float:
    """One ISO-DEP I-block carrying `inf_len` bytes of INF: PCB + INF + CRC_A."""
    return air_frame_s(PCB_BYTES + inf_len + CRC_A_BYTES)


def blocks(inf_len: int, fsc: int = DESFIRE_FSC) -> int:
    """How many chained I-blocks carry `inf_len` bytes (at least one, even when empty)."""
    room = fsc - PCB_BYTES - CRC_A_BYTES
    return max(1, -(-inf_len // room))


def iso_dep_send_s(inf_len: int, fsc: int = DESFIRE_FSC) -> float:
    """Sending `inf_len` bytes as chained I-blocks, each but the last answered by an R(ACK)."""
    n = blocks(inf_len, fsc)
    room = fsc - PCB_BYTES - CRC_A_BYTES
    t = sum(iblock_air_s(min(room, inf_len - i * room)) for i in range(n - 1))
    t += iblock_air_s(inf_len - (n - 1) * room)
    ack = air_frame_s(PCB_BYTES + CRC_A_BYTES)
    return t + (n - 1) * (2 * FDT_S + ack)


def card_processing_s(apdu: bytes) -> float:
    """The card's time for one DESFire command: native (INS first) or ISO-wrapped (90 INS ..)."""
    if len(apdu) >= 5 and apdu[0] == 0x90:
        ins = apdu[1]
    elif apdu:
        ins = apdu[0]
    else:
        return CARD_DEFAULT_S
    return CARD_PROCESSING_S.get(ins, CARD_DEFAULT_S)


def exchange_air_s(apdu: bytes, answer_len: int) -> float:
    """One APDU through ISO-DEP: the command's blocks, FDT, the card's work, the answer's blocks."""
    return iso_dep_send_s(len(apdu)) + FDT_S + card_processing_s(apdu) + iso_dep_send_s(answer_len)


def activation_s(uid_len: int, ats: bytes | None) -> float:
    """InListPassiveTarget finding one card: REQA/ATQA, anticollision and SELECT per cascade
    level, then RATS/ATS and the SFGT when the card is ISO-DEP and the chip sends RATS."""
    t = short_frame_s() + FDT_S + air_frame_s(2)  # REQA, ATQA
    levels = {4: 1, 7: 2, 10: 3}.get(uid_len, 2)
    for _ in range(levels):
        t += air_frame_s(2) + FDT_S + air_frame_s(5)  # SEL NVB=20, UID CLn + BCC
        t += air_frame_s(7 + CRC_A_BYTES) + FDT_S + air_frame_s(1 + CRC_A_BYTES)  # SELECT, SAK
    if ats:
        t += air_frame_s(2 + CRC_A_BYTES) + FDT_S + air_frame_s(len(ats) + CRC_A_BYTES) + SFGT_S
    return t


def deselect_s() -> float:
    """InRelease of an ISO-DEP card: S(DESELECT) and its answer."""
    return 2 * air_frame_s(PCB_BYTES + CRC_A_BYTES) + FDT_S


@dataclass
class FieldTiming:
    """The emulator's field mode: HSU at `baud` and the card's RF and processing times.

    `link` paces the HSU wire; `card` adds the air and the card. Both on by default."""

    baud: int = HSU_BAUD
    link: bool = True
    card: bool = True

    def byte_s(self) -> float:
        return uart_byte_s(self.baud) if self.link else 0.0

    def list_s(self, found: list[tuple[int, bytes | None]], tries: int) -> float:
        """InListPassiveTarget: each card found (UID length, ATS when RATS was sent), or
        `tries` empty tries."""
        if not self.card:
            return 0.0
        if not found:
            return PN532_COMMAND_S + tries * PN532_EMPTY_TRY_S
        return PN532_COMMAND_S + sum(activation_s(n, ats) for n, ats in found)

    def exchange_s(self, apdu: bytes, answer_len: int) -> float:
        return PN532_COMMAND_S + exchange_air_s(apdu, answer_len) if self.card else 0.0

    def release_s(self, iso_dep: bool) -> float:
        return PN532_COMMAND_S + (deselect_s() if iso_dep else 0.0) if self.card else 0.0

    def command_s(self) -> float:
        """Any other command: the PN532's firmware only."""
        return PN532_COMMAND_S if self.card else 0.0
