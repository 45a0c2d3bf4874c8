"""MIFARE DESFire EV2 secure messaging, reader (PCD) side: AuthenticateEV2First,
session keys, transaction identifier, command counter, CMACt on commands and
responses, CommMode.Full encryption.  Transport-agnostic: every exchange goes
through `transceive(apdu) -> response` with ISO 7816-4 wrapped native commands
(CLA 0x90, status 0x91 xx)."""
import os

from crypto import ct
from crypto.aes import AES, ZERO_IV, cbc_decrypt, cbc_encrypt, pad_m2, unpad_m2, xor
from crypto.cmac import CMAC, truncate

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

# Native command codes used by the door and the personalizer.
CMD_AUTH_EV2_FIRST = const(0x71)
CMD_ADDITIONAL_FRAME = const(0xAF)
CMD_SELECT_APPLICATION = const(0x5A)
CMD_READ_DATA = const(0xAD)
CMD_WRITE_DATA = const(0x8D)
CMD_GET_VERSION = const(0x60)
CMD_GET_CARD_UID = const(0x51)
CMD_CREATE_APPLICATION = const(0xCA)
CMD_CREATE_STD_DATA_FILE = const(0xCD)
CMD_CHANGE_KEY = const(0xC4)
CMD_GET_APPLICATION_IDS = const(0x6A)
CMD_FORMAT_PICC = const(0xFC)
CMD_DELETE_APPLICATION = const(0xDA)
CMD_GET_KEY_VERSION = const(0x64)

# Status codes (second status byte after 0x91).
ST_OK = const(0x00)
ST_ADDITIONAL_FRAME = const(0xAF)
ST_NO_SUCH_KEY = const(0x40)
ST_LENGTH_ERROR = const(0x7E)
ST_PERMISSION_DENIED = const(0x9D)
ST_PARAMETER_ERROR = const(0x9E)
ST_APPLICATION_NOT_FOUND = const(0xA0)
ST_AUTHENTICATION_ERROR = const(0xAE)
ST_BOUNDARY_ERROR = const(0xBE)
ST_INTEGRITY_ERROR = const(0x1E)
ST_ILLEGAL_COMMAND = const(0x1C)
ST_DUPLICATE_ERROR = const(0xDE)
ST_FILE_NOT_FOUND = const(0xF0)

# Command data per frame: a native command longer than this goes out in 0xAF frames
# (ISO 14443-4 frame of 64 bytes less the ISO 7816 wrapping and the protocol bytes).
_MAX_CMD_FRAME = const(55)
# Most frames a chained answer may take (a 256-byte file in 16-byte frames is 17).
_MAX_FRAMES = const(32)

LABEL_ENC = b"\xa5\x5a"
LABEL_MAC = b"\x5a\xa5"


class CardError(Exception):
    """A card exchange failed. `reason` is a short stable word; `status` the card's
    status byte when it answered with one. Never carries key material."""

    def __init__(self, reason, status=None):
        super().__init__(reason if status is None else "%s (status %02X)" % (reason, status))
        self.reason = reason
        self.status = status


def wrap(ins, data=b""):
    """ISO 7816-4 wrapping of a native command: 90 INS 00 00 [Lc data] 00."""
    if data:
        return bytes([0x90, ins, 0, 0, len(data)]) + bytes(data) + b"\x00"
    return bytes([0x90, ins, 0, 0, 0])


def rotl(b):
    return bytes(b[1:]) + bytes(b[:1])


def session_vector(label, rnd_a, rnd_b):
    """SV1/SV2: label || 00 01 00 80 || RndA[15:14] || (RndA[13:8] ^ RndB[15:10])
    || RndB[9:0] || RndA[7:0] (byte 15 is the first byte sent)."""
    return (bytes(label) + b"\x00\x01\x00\x80" + bytes(rnd_a[0:2]) + xor(rnd_a[2:8], rnd_b[0:6])
            + bytes(rnd_b[6:16]) + bytes(rnd_a[8:16]))


def session_keys(key, rnd_a, rnd_b):
    """(SesAuthENCKey, SesAuthMACKey) from the authentication key and both randoms."""
    c = CMAC(key)
    return c.mac(session_vector(LABEL_ENC, rnd_a, rnd_b)), c.mac(session_vector(LABEL_MAC, rnd_a, rnd_b))


def crc32_desfire(data):
    """CRC-32 (IEEE 802.3 polynomial, preset 0xFFFFFFFF, no final xor), 4 bytes LSB first."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return bytes([crc & 0xFF, (crc >> 8) & 0xFF, (crc >> 16) & 0xFF, (crc >> 24) & 0xFF])


def change_key_plaintext(key_no, auth_key_no, new_key, old_key, version):
    """ChangeKey data before padding: the authenticated key itself is sent as
    NewKey || KeyVer; another key as (NewKey ^ OldKey) || KeyVer || CRC32(NewKey)."""
    if (key_no & 0x3F) == auth_key_no:
        return bytes(new_key) + bytes([version])
    if old_key is None:
        raise ValueError("old key needed to change another key")
    return xor(new_key, old_key) + bytes([version]) + crc32_desfire(new_key)


def u16le(n):
    return bytes([n & 0xFF, (n >> 8) & 0xFF])


def u24le(n):
    return bytes([n & 0xFF, (n >> 8) & 0xFF, (n >> 16) & 0xFF])


class SecureChannel:
    """Secure-messaging state after authentication; shared by reader and card sides."""

    def __init__(self, ti, enc_key, mac_key):
        self.ti = bytes(ti)
        self.cmd_ctr = 0
        self._enc = AES(enc_key)
        self._mac = CMAC(mac_key)

    def __repr__(self):
        return "<SecureChannel ctr=%d keys hidden>" % self.cmd_ctr

    def _iv(self, label, ctr):
        return self._enc.encrypt_block(bytes(label) + self.ti + u16le(ctr) + bytes(8))

    def iv_cmd(self):
        return self._iv(LABEL_ENC, self.cmd_ctr)

    def iv_resp(self):
        return self._iv(LABEL_MAC, self.cmd_ctr + 1)

    def cmd_mac(self, ins, header, data):
        msg = bytes([ins]) + u16le(self.cmd_ctr) + self.ti + bytes(header) + bytes(data)
        return truncate(self._mac.mac(msg))

    def resp_mac(self, status, data, ctr=None):
        c = self.cmd_ctr if ctr is None else ctr
        return truncate(self._mac.mac(bytes([status]) + u16le(c) + self.ti + bytes(data)))

    def encrypt_cmd(self, data):
        return cbc_encrypt(self._enc, self.iv_cmd(), pad_m2(data))

    def decrypt_cmd(self, data):
        return unpad_m2(cbc_decrypt(self._enc, self.iv_cmd(), data))

    def encrypt_resp(self, data, ctr):
        iv = self._enc.encrypt_block(LABEL_MAC + self.ti + u16le(ctr) + bytes(8))
        return cbc_encrypt(self._enc, iv, pad_m2(data))

    def decrypt_resp(self, data):
        """Decrypt a response; call after cmd_ctr was advanced past the command."""
        iv = self._enc.encrypt_block(LABEL_MAC + self.ti + u16le(self.cmd_ctr) + bytes(8))
        return unpad_m2(cbc_decrypt(self._enc, iv, data))


def drive(gen, transceive):
    """Run a card exchange generator with a blocking `transceive(apdu) -> response`.
    A transceive that raises (card gone, reader fault) is answered with None."""
    try:
        apdu = next(gen)
        while True:
            try:
                resp = transceive(apdu)
            except Exception:  # the transport's own error type
                resp = None
            apdu = gen.send(resp)
    except StopIteration as e:
        return e.value


async def drive_async(gen, transceive):
    """The same with an async transceive (e.g. the asyncio PN532 driver's exchange)."""
    try:
        apdu = next(gen)
        while True:
            try:
                resp = await transceive(apdu)
            except Exception:
                resp = None
            apdu = gen.send(resp)
    except StopIteration as e:
        return e.value


class Reader:
    """The reader side of a DESFire EV2 card. Raises CardError on any failure.

    Every operation exists twice: `g_name(...)` is a generator that yields C-APDUs and
    receives R-APDUs (None when the card did not answer), for callers that own the
    transport loop (asyncio, see `drive_async`); `name(...)` runs it on the blocking
    `transceive` given to the constructor."""

    MODE_PLAIN = 0
    MODE_MAC = 1
    MODE_FULL = 3

    def __init__(self, transceive=None, rng=None, max_frame=_MAX_CMD_FRAME):
        self._t = transceive
        self._rng = rng or os.urandom
        self.max_frame = max_frame
        self.channel = None
        self.auth_key_no = None

    def __repr__(self):
        return "<ev2.Reader authenticated=%s>" % (self.channel is not None)

    def g_exchange(self, ins, data=b""):
        """Send one native command; returns (status, data). No status checking."""
        resp = yield wrap(ins, data)
        if resp is None or len(resp) < 2:
            self.channel = None
            raise CardError("no_response")
        if resp[-2] != 0x91:
            self.channel = None
            raise CardError("not_desfire", resp[-1])
        return resp[-1], bytes(resp[:-2])

    def g_transact(self, ins, data=b""):
        """One native command with 0xAF chaining both ways: command data longer than
        `max_frame` goes out in additional frames (the card answers 91 AF to each but the
        last); an answer ending in 91 AF is fetched with empty 0xAF frames and joined.
        Returns (final status, all answer data)."""
        data = bytes(data)
        n = self.max_frame
        st, out = yield from self.g_exchange(ins, data[:n])
        pos = n
        while pos < len(data):
            if st != ST_ADDITIONAL_FRAME or out:
                if st == ST_OK:  # the card took a part for the whole command
                    self.channel = None
                    raise CardError("protocol_error")
                return st, out
            st, out = yield from self.g_exchange(CMD_ADDITIONAL_FRAME, data[pos:pos + n])
            pos += n
        frames = 1
        while st == ST_ADDITIONAL_FRAME:
            frames += 1
            if frames > _MAX_FRAMES:
                self.channel = None
                raise CardError("protocol_error")
            st, more = yield from self.g_exchange(CMD_ADDITIONAL_FRAME)
            out += more
        return st, out

    def _ok(self, status, expect=ST_OK):
        if status != expect:
            self.channel = None
            if status == ST_AUTHENTICATION_ERROR:
                raise CardError("auth_failed", status)
            if status == ST_INTEGRITY_ERROR:
                raise CardError("integrity_error", status)
            if status == ST_PERMISSION_DENIED:
                raise CardError("permission_denied", status)
            if status == ST_APPLICATION_NOT_FOUND:
                raise CardError("no_application", status)
            if status == ST_DUPLICATE_ERROR:
                raise CardError("duplicate", status)
            raise CardError("card_status", status)

    # --- unauthenticated commands -------------------------------------------------
    def g_plain_command(self, ins, data=b""):
        """A command without secure messaging (chained as needed); returns its data."""
        st, d = yield from self.g_transact(ins, data)
        self._ok(st)
        return d

    def g_select_application(self, aid):
        st, _ = yield from self.g_exchange(CMD_SELECT_APPLICATION, aid)
        self.channel = None
        self._ok(st)

    def g_get_version(self):
        """The three GetVersion frames concatenated (28 bytes on a 7-byte-UID card)."""
        st, d = yield from self.g_transact(CMD_GET_VERSION)
        self._ok(st)
        return d

    def g_get_key_version(self, key_no):
        """GetKeyVersion before authentication (CommMode.Plain): the version byte the card
        stores with key `key_no` of the selected application."""
        d = yield from self.g_plain_command(CMD_GET_KEY_VERSION, bytes([key_no]))
        if len(d) != 1:
            self.channel = None
            raise CardError("protocol_error")
        return d[0]

    # --- authentication -----------------------------------------------------------
    def g_authenticate(self, key, key_no, rnd_a=None):
        """AuthenticateEV2First with `key` as key number `key_no`."""
        self.channel = None
        aes = AES(key)
        st, enc_b = yield from self.g_exchange(CMD_AUTH_EV2_FIRST, bytes([key_no, 0]))
        if st != ST_ADDITIONAL_FRAME or len(enc_b) != 16:
            self._ok(st, ST_ADDITIONAL_FRAME)
            raise CardError("protocol_error")
        rnd_b = cbc_decrypt(aes, ZERO_IV, enc_b)
        rnd_a = rnd_a or self._rng(16)
        part2 = cbc_encrypt(aes, ZERO_IV, bytes(rnd_a) + rotl(rnd_b))
        st, enc = yield from self.g_exchange(CMD_ADDITIONAL_FRAME, part2)
        self._ok(st)
        if len(enc) != 32:
            raise CardError("protocol_error")
        plain = cbc_decrypt(aes, ZERO_IV, enc)
        if not ct.equal(plain[4:20], rotl(rnd_a)):
            raise CardError("auth_failed")
        enc_key, mac_key = session_keys(key, rnd_a, rnd_b)
        self.channel = SecureChannel(plain[0:4], enc_key, mac_key)
        self.auth_key_no = key_no
        return self.channel

    # --- secure messaging ---------------------------------------------------------
    def _need_auth(self):
        if self.channel is None:
            raise CardError("not_authenticated")
        return self.channel

    def g_command(self, ins, header=b"", data=b"", mode=1, resp_mode=None):
        """A command in an authenticated session. `mode`: MODE_PLAIN, MODE_MAC or
        MODE_FULL for the command data; `resp_mode` likewise for the response data
        (default: the same). Returns the verified (and decrypted) response data.

        EV2 secure messaging (MF3D(H)x2 datasheet, AN12196 section 4): in MODE_MAC and
        MODE_FULL the command ends with MACt over Cmd || CmdCtr || TI || header || data,
        even with no data; the response MAC covers status || CmdCtr+1 || TI || data of all
        its frames. CmdCtr advances once per command, and any error status or failed
        check ends the session (the card ends it too)."""
        ch = self._need_auth()
        if resp_mode is None:
            resp_mode = mode
        body = bytes(header)
        if mode == self.MODE_FULL and data:
            body += ch.encrypt_cmd(data)
        else:
            body += bytes(data)
        if mode != self.MODE_PLAIN:
            body += ch.cmd_mac(ins, header, body[len(header):])
        st, resp = yield from self.g_transact(ins, body)
        self._ok(st)
        ch.cmd_ctr += 1
        if resp_mode == self.MODE_PLAIN:
            return resp
        if len(resp) < 8:
            self.channel = None
            raise CardError("bad_mac")
        payload, mac = resp[:-8], resp[-8:]
        if not ct.equal(mac, ch.resp_mac(st, payload)):
            self.channel = None
            raise CardError("bad_mac")
        if resp_mode == self.MODE_FULL and payload:
            try:
                return ch.decrypt_resp(payload)
            except ValueError:
                self.channel = None
                raise CardError("bad_padding") from None
        return payload

    def g_read_data(self, file_no, offset, length, mode=1):
        hdr = bytes([file_no]) + u24le(offset) + u24le(length)
        return (yield from self.g_command(CMD_READ_DATA, hdr, b"", mode))

    def g_write_data(self, file_no, offset, data, mode=1):
        hdr = bytes([file_no]) + u24le(offset) + u24le(len(data))
        yield from self.g_command(CMD_WRITE_DATA, hdr, data, mode, self.MODE_MAC)

    def g_get_card_uid(self):
        """GetCardUID is CommMode.Full: the command carries MACt over 51 || CmdCtr || TI
        (`90 51 00 00 08 MACt 00`, AN12196 Table 28); `90 51 00 00 00` is the EV1 form and
        an EV2 card refuses it. The answer is E(UID || 80 00..) || MACt."""
        return (yield from self.g_command(CMD_GET_CARD_UID, b"", b"", self.MODE_MAC, self.MODE_FULL))

    def g_change_key(self, key_no, new_key, old_key=None, version=1):
        plain = change_key_plaintext(key_no, self.auth_key_no, new_key, old_key, version)
        same = (key_no & 0x3F) == self.auth_key_no
        yield from self.g_command(CMD_CHANGE_KEY, bytes([key_no]), plain, self.MODE_FULL,
                                  self.MODE_PLAIN if same else self.MODE_MAC)
        if same:  # the card ends the session after changing the key in use
            self.channel = None

    # --- the same on the blocking transceive ---------------------------------------
    def __getattr__(self, name):
        """`reader.name(...)` runs `g_name(...)` on the blocking transceive (host tools and
        tests). One lookup instead of a method per operation: the door drives the generators
        itself, and each method would be one more function object in its heap."""
        gen = None if name[0] == "_" else getattr(type(self), "g_" + name, None)
        if gen is None:
            raise AttributeError(name)
        return lambda *args, **kw: drive(gen(self, *args, **kw), self._t)
