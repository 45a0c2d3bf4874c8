"""PN532 host protocol over HSU (UART), NXP UM0701-02.

Frames (host -> PN532 TFI 0xD4, PN532 -> host TFI 0xD5):
  normal    00 00 FF LEN LCS TFI PD0..PDn DCS 00      LEN = len(TFI+PD) (1..255), LEN+LCS = 0
  extended  00 00 FF FF FF LENM LENL LCS TFI PD.. DCS 00           LENM+LENL+LCS = 0
  ACK       00 00 FF 00 FF 00        NACK  00 00 FF FF 00 00
  error     00 00 FF 01 FF 7F 81 00  (application-level error: the PN532 rejected the frame)
  DCS: TFI + PD0 + .. + PDn + DCS = 0 (mod 256)

Layers, all MicroPython code (the blocking driver the host tools and tests use, PN532 and
PollStream, is host_tools/pn532_sync.py: the door never blocks on its reader):
  encode_frame / FrameParser   the codec (bounded: one preallocated receive buffer)
  Core                          the command/response logic as generators that ask for I/O
  AsyncPN532(uart)              asyncio driver over board.reader_uart:
                                write(buf), await drain(), await read(n, timeout_ms), reset_input()

Every failure raises PN532Error(code, detail): no other exception leaves the drivers
for protocol trouble (garbage, truncated frames, checksum errors, wrong TFI, no answer,
card gone, two cards), and every wait is bounded by a timeout."""

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

import ticks

TFI_HOST = const(0xD4)
TFI_PN532 = const(0xD5)

CMD_GET_FIRMWARE_VERSION = const(0x02)
CMD_SAM_CONFIGURATION = const(0x14)
CMD_RF_CONFIGURATION = const(0x32)
CMD_IN_DATA_EXCHANGE = const(0x40)
CMD_IN_LIST_PASSIVE_TARGET = const(0x4A)
CMD_IN_RELEASE = const(0x52)
RETRY_FOREVER = const(0xFF)  # RFConfiguration MxRtyPassiveActivation: InListPassiveTarget waits for a card

ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
ERROR_FRAME = b"\x00\x00\xff\x01\xff\x7f\x81\x00"
WAKEUP = b"\x55\x55\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

MAX_DATA = const(265)  # TFI + PD: the PN532's frame buffer
MAX_FRAME = const(MAX_DATA + 10)  # extended header (8) + TFI..PD + DCS + postamble
_MAX_APDU = const(262)  # InDataExchange DataOut limit
_MAX_RESPONSE = const(1024)  # an APDU response assembled from MI-chained parts
_MAX_NOISE = const(2 * MAX_FRAME)  # bytes without a frame before giving up on the link
_LATE_NOISE = const(8)  # bytes outside a frame taken after a wait's deadline before it ends

# Parser events
EV_NONE = const(0)
EV_ACK = const(1)
EV_NACK = const(2)
EV_FRAME = const(3)
EV_ERROR_FRAME = const(4)
EV_BAD_LCS = const(5)
EV_BAD_DCS = const(6)
EV_TOO_LONG = const(7)
EV_BAD_LEN = const(8)

# PN532Error codes
E_NO_ANSWER = const(1)  # nothing (or no complete frame) within the timeout
E_NO_ACK = const(2)  # the PN532 kept refusing the command (NACK / no ACK after retries)
E_CHECKSUM = const(3)  # response checksum still wrong after NACK retries
E_BAD_FRAME = const(4)  # malformed frame: length, noise, truncated
E_WRONG_TFI = const(5)  # frame not from a PN532 (TFI != D5)
E_WRONG_RESPONSE = const(6)  # response to another command
E_ERROR_FRAME = const(7)  # the PN532 answered with its application error frame
E_NO_CARD = const(8)  # no target in the field
E_TWO_CARDS = const(9)  # more than one target in the field
E_CARD_LOST = const(10)  # the card left the field or stopped answering mid-exchange
E_CARD_ERROR = const(11)  # any other InDataExchange status (detail = the status byte)
E_BAD_TARGET = const(12)  # target data that does not parse
E_TOO_LONG = const(13)  # command or response larger than the PN532 can carry
E_NOT_CONNECTED = const(14)  # the reader link is down

# Each code's name, by its place (the code's name in lower case without E_): a tuple of
# constants is frozen into the image, a dict would be built in the door's heap at import.
REASONS = (None, "no_answer", "no_ack", "checksum", "bad_frame", "wrong_tfi", "wrong_response",
           "error_frame", "no_card", "two_cards", "card_lost", "card_error", "bad_target",
           "too_long", "not_connected")

# InDataExchange / InRelease status byte (low 6 bits), UM0701-02 table 7.1
ST_OK = const(0x00)
ST_TIMEOUT = const(0x01)
_ST_CRC = const(0x02)
_ST_PARITY = const(0x03)
_ST_COLLISION = const(0x06)
_ST_RELEASED = const(0x29)
_ST_CARD_DISAPPEARED = const(0x2B)
_STATUS_MI = const(0x40)
_LOST_STATUSES = (ST_TIMEOUT, _ST_RELEASED, _ST_CARD_DISAPPEARED)


class PN532Error(Exception):
    """A reader failure with a reason code (`code`, `reason`) and an optional `detail`."""

    def __init__(self, code, detail=0):
        reason = REASONS[code] if 0 < code < len(REASONS) else "error"
        super().__init__(reason, detail)
        self.code = code
        self.reason = reason
        self.detail = detail

    def __str__(self):
        if self.detail:
            return "%s (0x%02x)" % (self.reason, self.detail)
        return self.reason


def checksum(data, start=0, end=None):
    """The value that makes sum(data[start:end]) + value == 0 mod 256."""
    if end is None:
        end = len(data)
    s = 0
    for i in range(start, end):
        s += data[i]
    return (-s) & 0xFF


def encode_into(buf, tfi, data):
    """Write one information frame carrying TFI + data into buf; returns its length."""
    n = len(data) + 1
    if n > MAX_DATA:
        raise PN532Error(E_TOO_LONG, 0)
    buf[0] = 0x00
    buf[1] = 0x00
    buf[2] = 0xFF
    if n <= 255:
        buf[3] = n
        buf[4] = (-n) & 0xFF
        i = 5
    else:
        buf[3] = 0xFF
        buf[4] = 0xFF
        buf[5] = n >> 8
        buf[6] = n & 0xFF
        buf[7] = (-(buf[5] + buf[6])) & 0xFF
        i = 8
    buf[i] = tfi
    s = tfi
    j = i + 1
    for b in data:
        buf[j] = b
        s += b
        j += 1
    buf[j] = (-s) & 0xFF
    buf[j + 1] = 0x00
    return j + 2


def encode_frame(tfi, data):
    """One information frame as bytes (host side, tests and the emulator)."""
    buf = bytearray(len(data) + 11)
    n = encode_into(buf, tfi, data)
    return bytes(buf[:n])


class FrameParser:
    """Incremental frame parser over one preallocated buffer.

    feed(byte) returns an EV_* event; after EV_FRAME the frame's TFI + data are
    self.data[:self.length] (valid until the next feed). Noise between frames is skipped."""

    def __init__(self):
        self.data = bytearray(MAX_DATA)
        self.length = 0
        self.reset()

    def reset(self):
        self._state = 0
        self._prev = -1
        self._len1 = 0
        self._n = 0
        self._need = 0
        self._sum = 0
        self.length = 0

    def feed(self, b):
        st = self._state
        if st == 0:  # looking for the start code 00 FF
            if self._prev == 0x00 and b == 0xFF:
                self._state = 1
                self._prev = -1
            else:
                self._prev = b
            return EV_NONE
        if st == 1:  # LEN (or first byte of ACK/NACK/extended marker)
            self._len1 = b
            self._state = 2
            return EV_NONE
        if st == 2:  # LCS, or the second byte of ACK / NACK / extended marker
            l1 = self._len1
            self._state = 0
            if l1 == 0x00 and b == 0xFF:
                return EV_ACK
            if l1 == 0xFF and b == 0x00:
                return EV_NACK
            if l1 == 0xFF and b == 0xFF:
                self._state = 3
                return EV_NONE
            if (l1 + b) & 0xFF:
                return EV_BAD_LCS
            if l1 == 0:
                return EV_BAD_LEN
            return self._start_data(l1)
        if st == 3:  # extended LENM
            self._len1 = b
            self._state = 4
            return EV_NONE
        if st == 4:  # extended LENL
            self._need = (self._len1 << 8) | b
            self._sum = self._len1 + b
            self._state = 5
            return EV_NONE
        if st == 5:  # extended LCS
            self._state = 0
            if (self._sum + b) & 0xFF:
                return EV_BAD_LCS
            if self._need == 0:
                return EV_BAD_LEN
            return self._start_data(self._need)
        if st == 6:  # TFI + PD
            self.data[self._n] = b
            self._n += 1
            self._sum += b
            if self._n == self._need:
                self._state = 7
            return EV_NONE
        # st == 7: DCS
        self._state = 0
        self._prev = -1
        if (self._sum + b) & 0xFF:
            return EV_BAD_DCS
        self.length = self._need
        if self._need == 1 and self.data[0] == 0x7F:
            return EV_ERROR_FRAME
        return EV_FRAME

    def _start_data(self, n):
        if n > MAX_DATA:
            self._prev = -1
            return EV_TOO_LONG
        self._need = n
        self._n = 0
        self._sum = 0
        self._state = 6
        return EV_NONE


class Target:
    """One ISO 14443A target from InListPassiveTarget."""

    def __init__(self, tg, atqa, sak, uid, ats):
        self.tg = tg
        self.atqa = atqa  # SENS_RES, 2 bytes as the PN532 reports them
        self.sak = sak  # SEL_RES
        self.uid = uid  # NFCID1: 4, 7 or 10 bytes
        self.ats = ats  # ATS including its length byte TL, b"" when none

    def iso_dep(self):
        return bool(self.sak & 0x20)

    def __repr__(self):
        return "Target(uid=%s sak=0x%02x)" % (self.uid.hex(), self.sak)


def parse_targets(data):
    """InListPassiveTarget response data after the command code: (count, first Target or None)."""
    if len(data) < 1:
        raise PN532Error(E_BAD_TARGET, 0)
    nb = data[0]
    if nb == 0:
        return 0, None
    if nb > 2:
        raise PN532Error(E_BAD_TARGET, nb)
    i = 1
    first = None
    for _ in range(nb):
        if i + 5 > len(data):
            raise PN532Error(E_BAD_TARGET, 1)
        tg = data[i]
        atqa = bytes(data[i + 1:i + 3])
        sak = data[i + 3]
        ulen = data[i + 4]
        i += 5
        if ulen not in (4, 7, 10) or i + ulen > len(data):
            raise PN532Error(E_BAD_TARGET, 2)
        uid = bytes(data[i:i + ulen])
        i += ulen
        ats = b""
        if sak & 0x20:  # ISO 14443-4 compliant: ATS follows (TL counts itself)
            if i >= len(data):
                raise PN532Error(E_BAD_TARGET, 3)
            tl = data[i]
            if tl < 1 or i + tl > len(data):
                raise PN532Error(E_BAD_TARGET, 4)
            ats = bytes(data[i:i + tl])
            i += tl
        if first is None:
            first = Target(tg, atqa, sak, uid, ats)
    if i != len(data):
        raise PN532Error(E_BAD_TARGET, 5)
    return nb, first


# I/O requests the Core's generators yield to their driver
IO_WRITE = const(0)  # (IO_WRITE, buffer, length): send these bytes
IO_READ = const(1)  # (IO_READ, timeout_ms, 0): send back bytes (b"" on timeout)
IO_FLUSH = const(2)  # (IO_FLUSH, 0, 0): drop any unread input


class Core:
    """Command/response logic, independent of how bytes move.

    Each command is a generator: drive it with next()/send() answering the I/O
    requests; its StopIteration value is the result (see PN532 and AsyncPN532)."""

    def __init__(self, ack_timeout_ms=50, retries=2, clock=None):
        self.parser = FrameParser()
        self.tx = bytearray(MAX_FRAME)
        self.ack_timeout_ms = ack_timeout_ms
        self.retries = retries
        self.ticks = clock.ticks_ms if clock is not None else ticks.ticks_ms
        self.ticks_diff = clock.ticks_diff if clock is not None else ticks.ticks_diff
        self.tg = 0
        self.listing = False  # a wait_target's InListPassiveTarget is still pending
        self._listed_at = 0  # ticks when it was sent
        self.frames = 0  # information frames sent
        self.resends = 0  # frames sent again after NACK, bad checksum or no ACK
        self._pend = b""
        self._pi = 0
        self._asked = 0  # bit n: command code n was sent on this link (see _response)

    def _wait(self, timeout_ms, want_ack, keep=False):
        """Read until an event that ends the wait; returns the event (EV_NONE on timeout).

        Bytes after the event stay pending for the next wait (an ACK and its response
        often arrive in one read). The wait times out only when a read after the deadline
        finds nothing: a door whose loop was held up past the deadline (a flash erase, a TLS
        handshake) takes the bytes that came meanwhile instead of sending the command again,
        which would run an APDU twice on the card (a second AuthenticateEV2First part 1
        draws a new RndB and the authentication fails)."""
        p = self.parser
        if not keep:  # keep: go on with a frame begun in the last wait
            p.reset()
        start = self.ticks()
        noise = 0
        late = False  # the bytes at hand were read after the deadline
        late_noise = 0
        while True:
            pend = self._pend
            i = self._pi
            if i >= len(pend):
                left = timeout_ms - self.ticks_diff(self.ticks(), start)
                chunk = yield (IO_READ, left if left > 0 else 0, 0)
                if left <= 0 and not chunk and chunk is not None:
                    return EV_NONE
                if chunk is None:
                    raise PN532Error(E_NOT_CONNECTED, 0)
                late = left <= 0
                self._pend = chunk
                self._pi = 0
                continue
            self._pi = i + 1
            ev = p.feed(pend[i])
            if ev == EV_NONE:
                noise += 1
                if noise > _MAX_NOISE:
                    return EV_BAD_LEN
                # Past the deadline only a frame already begun keeps the wait going: a
                # reader trickling junk must not hold the door past its timeout.
                if late and p._state == 0:
                    late_noise += 1
                    if late_noise > _LATE_NOISE:
                        return EV_NONE
                continue
            if want_ack and ev == EV_FRAME:
                noise += 1  # a response frame where an ACK belongs: not an ACK
                continue
            return ev

    def flush(self):
        self._pend = b""
        self._pi = 0
        yield (IO_FLUSH, 0, 0)

    def command(self, cmd, params, timeout_ms, once=False):
        """Send D4 cmd params, wait for ACK then the D5 cmd+1 response; returns its data.

        `once`: the command must not run twice (an APDU to the card), see _send."""
        yield from self._send(cmd, params, timeout_ms if once else 0)
        return (yield from self._response(cmd, timeout_ms, False))

    def _send(self, cmd, params, once_ms=0):
        """Send D4 cmd params until the PN532 ACKs it (again after a NACK or no ACK).

        With `once_ms`, a command not ACKed within the ACK timeout is not sent again: the
        chip may be working on it already (a loaded link, a slow chip or host), and a second
        copy would run the APDU twice on the card (a second AuthenticateEV2First part 1
        draws a new RndB and the card refuses part 2: a valid card refused as auth_failed).
        The ACK is waited for up to `once_ms`; E_NO_ANSWER when it never comes. Only a NACK
        (the chip took nothing) sends it again."""
        yield from self.abort()
        data = bytearray(len(params) + 1)
        data[0] = cmd
        data[1:] = params
        n = encode_into(self.tx, TFI_HOST, data)
        self._asked |= 1 << (cmd & 0x7F)
        attempts = 0
        while True:
            self.frames += 1
            yield from self.flush()
            yield (IO_WRITE, self.tx, n)
            ev = yield from self._wait(self.ack_timeout_ms, True)
            if ev == EV_NONE and once_ms > self.ack_timeout_ms:
                ev = yield from self._wait(once_ms - self.ack_timeout_ms, True, True)
            if ev == EV_ACK:
                break
            if ev == EV_ERROR_FRAME:
                raise PN532Error(E_ERROR_FRAME, cmd)
            if once_ms and ev != EV_NACK:  # the chip may have taken it: never run it twice
                raise PN532Error(E_NO_ANSWER if ev == EV_NONE else E_NO_ACK, cmd)
            attempts += 1
            if attempts > self.retries:
                if ev == EV_NONE:
                    raise PN532Error(E_NO_ANSWER, cmd)
                raise PN532Error(E_NO_ACK, cmd)
            self.resends += 1

    def _response(self, cmd, timeout_ms, none_on_timeout, resume=False):
        """The D5 cmd+1 response's data; None when nothing came in time and `none_on_timeout`
        (with `resume`, the wait goes on from where the last one stopped).

        A late answer to another command sent on this link (a command sent again after its
        ACK came late, an exchange given up on) can arrive after the flush, its ACK taken
        for this command's: it is skipped, a bounded number of times, and this command's
        own answer waited for (taken for this one, the card step would end as card_lost
        with the card on the reader)."""
        nacks = 0
        stale = 0
        start = self.ticks()
        while True:
            # One deadline for the whole answer: stray ACKs, stale frames and NACKed
            # retries come out of it, never with a new timeout each.
            left = timeout_ms - self.ticks_diff(self.ticks(), start)
            ev = yield from self._wait(left if left > 0 else 0, False, resume)
            resume = False
            if ev == EV_FRAME and self._is_stale(cmd) and stale <= self.retries + 1:
                stale += 1
                continue
            if ev == EV_FRAME:
                break
            if ev == EV_ERROR_FRAME:
                raise PN532Error(E_ERROR_FRAME, cmd)
            if ev == EV_NONE:
                if none_on_timeout:
                    return None
                raise PN532Error(E_NO_ANSWER, cmd)
            if ev in (EV_BAD_DCS, EV_BAD_LCS):
                nacks += 1
                if nacks > self.retries:
                    raise PN532Error(E_CHECKSUM, cmd)
                self.resends += 1
                yield from self.flush()
                yield (IO_WRITE, NACK, len(NACK))  # the PN532 sends its response again
                continue
            if ev == EV_TOO_LONG:
                raise PN532Error(E_TOO_LONG, cmd)
            if ev in (EV_ACK, EV_NACK):
                if self.ticks_diff(self.ticks(), start) >= timeout_ms:
                    if none_on_timeout:
                        return None
                    raise PN532Error(E_NO_ANSWER, cmd)
                continue  # a stray ACK: keep waiting for the response
            raise PN532Error(E_BAD_FRAME, cmd)
        p = self.parser
        if p.data[0] != TFI_PN532:
            raise PN532Error(E_WRONG_TFI, p.data[0])
        if p.length < 2 or p.data[1] != cmd + 1:
            raise PN532Error(E_WRONG_RESPONSE, p.data[1] if p.length > 1 else 0)
        return bytes(p.data[2:p.length])

    def _is_stale(self, cmd):
        """Whether the frame just parsed answers another command this link sent."""
        p = self.parser
        if p.length < 2 or p.data[0] != TFI_PN532:
            return False
        code = p.data[1]
        return code != cmd + 1 and code & 1 == 1 and bool(self._asked >> ((code - 1) & 0x7F) & 1)

    def wake(self):
        yield from self.abort()
        yield (IO_WRITE, WAKEUP, len(WAKEUP))

    def sam_configuration(self):
        """Normal mode (no SAM), virtual-card timeout 1 s, IRQ used."""
        yield from self.command(CMD_SAM_CONFIGURATION, b"\x01\x14\x01", 500)
        return True

    def rf_retries(self, passive=2):
        """RFConfiguration MaxRetries: InListPassiveTarget gives up after `passive` tries
        with an empty field; RETRY_FOREVER (the chip's power-up value) waits for a card."""
        yield from self.command(CMD_RF_CONFIGURATION, bytes([0x05, 0xFF, 0x01, passive]), 500)
        return True

    def firmware_version(self):
        data = yield from self.command(CMD_GET_FIRMWARE_VERSION, b"", 500)
        if len(data) != 4:
            raise PN532Error(E_BAD_FRAME, CMD_GET_FIRMWARE_VERSION)
        return data  # IC, Ver, Rev, Support

    def list_target(self, timeout_ms=1000, max_targets=2):
        """One ISO 14443A 106 kbps target, or None when the field is empty.

        With max_targets=2 (the default) two cards in the field are detected and refused."""
        params = b"\x02\x00" if max_targets == 2 else b"\x01\x00"
        data = yield from self.command(CMD_IN_LIST_PASSIVE_TARGET, params, timeout_ms)
        return (yield from self._listed(data))

    def wait_target(self, wait_ms, max_targets=2, renew_ms=0):
        """Like list_target, with the chip waiting for the card: after
        rf_retries(RETRY_FOREVER) InListPassiveTarget answers only once a card is in the
        field (UM0701-02 §7.3.1, MxRtyPassiveActivation FF), so a card is found within one
        activation try of its arrival instead of at the host's next poll. None when no card
        came within `wait_ms`; the command stays pending, and the next wait_target goes on
        waiting for its answer (nothing on the wire while the field is empty, and an answer
        that comes at the end of a wait is taken by the next). Any other command, or
        abort(), first ends it with an ACK frame from the host (UM0701-02 §6.2; libnfc's
        pn532_uart driver aborts a waiting command the same way).

        With `renew_ms`, a command pending that long is ended and sent again: a chip that
        reset meanwhile (a brown-out, a reader swapped) has forgotten it, and the door would
        wait on a silent wire forever, cards presented or not; sent again, it is taken up,
        or a reader that is gone is found out (no ACK: E_NO_ANSWER). It is ended at the end of
        a wait that received nothing, and sent by the next wait_target."""
        if not self.listing:
            params = b"\x02\x00" if max_targets == 2 else b"\x01\x00"
            yield from self._send(CMD_IN_LIST_PASSIVE_TARGET, params)
            self.listing = True
            self._listed_at = self.ticks()
            resume = False
        else:
            resume = True
        data = yield from self._response(CMD_IN_LIST_PASSIVE_TARGET, wait_ms, True, resume)
        if data is None:
            if renew_ms and self._idle() and \
                    self.ticks_diff(self.ticks(), self._listed_at) >= renew_ms:
                yield from self.abort()
            return None
        self.listing = False
        return (yield from self._listed(data))

    def _idle(self):
        """No answer begun: nothing half parsed, nothing received and not yet parsed."""
        return self.parser._state == 0 and self._pi >= len(self._pend)

    def abort(self):
        """End a pending wait_target (an ACK frame: the chip drops the command)."""
        if self.listing:
            self.listing = False
            self.tg = 0
            yield (IO_WRITE, ACK, len(ACK))

    def _listed(self, data):
        nb, target = parse_targets(data)
        if nb == 0:
            self.tg = 0
            return None
        if nb > 1:
            self.tg = 0
            yield from self.release()
            raise PN532Error(E_TWO_CARDS, nb)
        self.tg = target.tg
        return target

    def exchange(self, apdu, timeout_ms=1000):
        """One APDU to the listed target; returns the card's response (data + SW)."""
        if self.tg == 0:
            raise PN532Error(E_NO_CARD, 0)
        if len(apdu) > _MAX_APDU:
            raise PN532Error(E_TOO_LONG, len(apdu) & 0xFF)
        params = bytearray(len(apdu) + 1)
        params[0] = self.tg
        params[1:] = apdu
        out = b""
        while True:
            data = yield from self.command(CMD_IN_DATA_EXCHANGE, params, timeout_ms, True)
            if len(data) < 1:
                raise PN532Error(E_BAD_FRAME, CMD_IN_DATA_EXCHANGE)
            st = data[0] & 0x3F
            if st in _LOST_STATUSES:
                self.tg = 0
                raise PN532Error(E_CARD_LOST, st)
            if st != ST_OK:
                raise PN532Error(E_CARD_ERROR, st)
            out += data[1:]
            if len(out) > _MAX_RESPONSE:
                raise PN532Error(E_TOO_LONG, 0)
            if not data[0] & _STATUS_MI:
                return out
            params = bytearray(1)  # more information: fetch the next part
            params[0] = self.tg

    def release(self):
        data = yield from self.command(CMD_IN_RELEASE, b"\x00", 500)
        self.tg = 0
        return data[0] if data else 0


class AsyncPN532:
    """asyncio driver over board.reader_uart (write, drain, read(n, timeout_ms), reset_input)."""

    def __init__(self, uart, ack_timeout_ms=50, retries=2, clock=None):
        self.uart = uart
        self.core = Core(ack_timeout_ms, retries, clock)

    async def _run(self, gen):
        uart = self.uart
        value = None
        try:
            while True:
                req = gen.send(value)
                value = None
                op = req[0]
                if op == IO_WRITE:
                    buf = req[1]
                    n = req[2]
                    uart.write(buf if n == len(buf) else bytes(buf[:n]))
                    await uart.drain()
                elif op == IO_READ:
                    value = await uart.read(64, req[1])
                else:
                    uart.reset_input()
        except StopIteration as e:
            return e.value
        except PN532Error:
            raise
        except (OSError, ValueError) as e:
            raise PN532Error(E_NOT_CONNECTED, 0) from e
        except MemoryError:
            # The command is left mid-way (its ACK or answer not read): the chip may still be
            # running it (waiting for a card, an APDU), and it takes no other command before
            # an ACK frame ends it. Marked pending, the next command (a restart's wake-up
            # too) sends that ACK first (Core.abort).
            self.core.listing = True
            raise

    async def begin(self):
        await self._run(self.core.wake())
        await self._run(self.core.sam_configuration())
        await self._run(self.core.rf_retries())
        return await self._run(self.core.firmware_version())

    async def firmware_version(self):
        return await self._run(self.core.firmware_version())

    async def list_target(self, timeout_ms=1000, max_targets=2):
        return await self._run(self.core.list_target(timeout_ms, max_targets))

    async def wait_target(self, wait_ms, max_targets=2, renew_ms=0):
        return await self._run(self.core.wait_target(wait_ms, max_targets, renew_ms))

    async def abort(self):
        return await self._run(self.core.abort())

    async def rf_retries(self, passive):
        return await self._run(self.core.rf_retries(passive))

    async def exchange(self, apdu, timeout_ms=1000):
        return await self._run(self.core.exchange(apdu, timeout_ms))

    async def release(self):
        return await self._run(self.core.release())
