"""The event journal's on-flash format (docs/journal.md is its specification): the sizes,
the record, sector-header and acknowledgement-entry layouts and their CRC, and the positions
in a decoded record. Shared by the door's journal (firmware/journal.py), which writes and
reads it, and the host tools that read a journal image (host_tools/journal_image.py).
"""

import struct
from binascii import crc32

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

RECORD_SIZE = const(32)  # one slot: a record, or slot 0's sector header
# seq, code, flags, boot, time, ms, arg, payload(12), crc
REC = "<IBBHIHH12sI"
HDR = "<4sII16sI"  # magic, sector_seq, first_seq, reserved, crc
ACK = "<II"  # acked_seq, crc
MAGIC = b"JRN1"
ACK_SIZE = const(8)
ACK_BLOCKS = const(2)  # blocks 0 and 1: the acknowledgement area; the data ring follows
# Erased flash as literals: a literal is frozen into the image, `b"\xff" * n` is made in the heap.
ERASED32 = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" \
           b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"  # RECORD_SIZE bytes
ERASED_ACK = b"\xff\xff\xff\xff\xff\xff\xff\xff"  # ACK_SIZE bytes

# The flags byte's high nibble holds the payload's length (0-12): a payload may end in zero
# bytes (a card reference can), so its padding cannot be told from its content otherwise.
# Records written before this carry 0 there: their payload is read with the padding trimmed.
FLAGS_MASK = const(0x0F)
LEN_SHIFT = const(4)
# The flags' low nibble is full; the `ms` field (0-999) has bits to spare: its top bit says the
# time was stamped by a clock set from an unsigned time (protocol flag 0x10 at upload).
MS_UNTRUSTED = const(0x8000)
MS_MASK = const(0x03FF)

# Positions in a decoded record tuple (tuples, not objects: a batch of records must fit a
# small heap).
R_SEQ = const(0)
R_CODE = const(1)
R_FLAGS = const(2)
R_BOOT = const(3)
R_TIME = const(4)
R_MS = const(5)
R_ARG = const(6)
R_PAYLOAD = const(7)


def crc(mv):
    """CRC-32 of a slot's first 28 bytes (or an ack entry's first 4), as stored."""
    return crc32(mv) & 0xFFFFFFFF


def header(buf, mv):
    """(sector sequence, first record sequence) of a sector header slot, or None when its
    magic or CRC does not match (the sector is empty). `mv` is a memoryview of `buf`."""
    magic, sseq, first, _, c = struct.unpack(HDR, buf)
    if magic != MAGIC or c != crc(mv[:28]):
        return None
    return sseq, first


def record(buf, mv):
    """A record slot decoded: the field tuple (R_* positions, the CRC last), None when the
    slot is erased (the sector's records end before it), False when it is torn."""
    if buf == ERASED32:
        return None
    fields = struct.unpack(REC, buf)
    if fields[8] != crc(mv[:28]):
        return False
    return fields


def payload_of(rec):
    """The payload of a decoded record, without its zero padding."""
    data = rec[R_PAYLOAD]
    n = rec[R_FLAGS] >> LEN_SHIFT
    if n:
        return data[:n]
    end = len(data)
    while end and data[end - 1] == 0:
        end -= 1
    return data[:end]
