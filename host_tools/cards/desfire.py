# A MIFARE DESFire EV2-subset card (the PICC side), written from the public command
# descriptions (NXP MF3D(H)x2 datasheet summary, AN12196/AN12343 examples).
# ISO 7816-4 wrapped native commands in, responses out: `card.process(apdu) -> resp`.
#
# Plain Python shared by CPython (virtual cards on vpcd, tests) and MicroPython (the
# in-process card of the authentication benchmark): no annotations, no dataclasses.
#
# Supported: GetVersion, SelectApplication, GetApplicationIDs, AuthenticateEV2First,
# GetCardUID, CreateApplication, CreateStdDataFile, ReadData, WriteData, ChangeKey,
# FormatPICC, DeleteApplication, GetKeyVersion, and the PC/SC pseudo-APDU FF CA 00 00 00 (UID) a
# contactless reader would answer. AES keys only.
#
# EV2 secure messaging is enforced as a card enforces it: after AuthenticateEV2First every
# command of the session carries MACt over Cmd || CmdCtr || TI || header || data (GetCardUID
# too: it is CommMode.Full). A command without its MAC (or with data of the wrong length) is
# refused with 91 7E, a wrong MAC with 91 1E; any error status ends the session. TI and CmdCtr
# live in the session (ev2.SecureChannel) until it ends.
#
# 0xAF chaining both ways: an answer longer than `frame` bytes goes out in frames ending
# 91 AF, fetched with 90 AF 00 00 00; WriteData and ChangeKey data may arrive in several
# frames (the card knows their length from the header) and each part but the last is
# answered 91 AF.
import json
import os

from crypto import ct, ev2
from crypto.aes import AES, ZERO_IV, cbc_decrypt, cbc_encrypt, xor

PICC_AID = "000000"
MAX_FRAME = 59  # answer data per frame (ISO 14443-4 FSD 64 less the protocol bytes)
MAX_FILE = 256  # largest standard data file this card creates


def _sw(status, data=b""):
    return bytes(data) + bytes([0x91, status])


class Refused(Exception):
    """A command refused with a status; the session ends."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def blank_state(uid):
    """A blank card: PICC master key all-zero AES, applications may be created freely."""
    return {"uid": bytes(uid).hex(), "picc_key": bytes(16).hex(), "picc_key_settings": 0x0F, "apps": {}}


def _aid_hex(aid):
    return bytes(aid).hex()


def full_len(n):
    """Length of n bytes of data in CommMode.Full: padded (ISO 9797-1 M2) to blocks."""
    return (n // 16 + 1) * 16


class DesfireCard:
    """State lives in a JSON-able dict; `path` (optional) makes it persistent. `frame`:
    the most answer data per frame before 0xAF chaining."""

    # GetVersion: vendor NXP, type DESFire, subtype, EV2 (major 0x12), 8 KB, ISO 14443-2/3
    HW = b"\x04\x01\x01\x12\x00\x1a\x05"
    SW = b"\x04\x01\x01\x02\x00\x1a\x05"

    def __init__(self, state, path=None, rng=None, frame=MAX_FRAME):
        self.state = state
        self.path = path
        self._rng = rng or os.urandom
        self.frame = frame
        self._table = None
        self.reset()

    @classmethod
    def load(cls, path, uid=None):
        try:
            with open(path) as f:
                state = json.load(f)
        except OSError:
            if uid is None:
                raise
            state = blank_state(uid)
        card = cls(state, path)
        card.save()
        return card

    def __repr__(self):
        return "<DesfireCard uid=%s keys hidden>" % self.state["uid"]

    @property
    def uid(self):
        return bytes.fromhex(self.state["uid"])

    def save(self):
        if self.path:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.state, f)
            os.rename(tmp, self.path)

    def reset(self):
        """Power cycle: PICC level selected, not authenticated."""
        self.aid = PICC_AID
        self.channel = None
        self.auth_key_no = None
        self._pending = None
        self._out = None  # answer frames still to send, then the final status
        self._out_status = 0
        self._in = None  # (ins, data so far, total length) of a command arriving in parts

    # --- helpers ------------------------------------------------------------------
    def _app(self):
        return None if self.aid == PICC_AID else self.state["apps"].get(self.aid)

    def _key(self, key_no):
        if self.aid == PICC_AID:
            return bytes.fromhex(self.state["picc_key"]) if key_no == 0 else None
        app = self._app()
        if app is None or key_no >= len(app["keys"]):
            return None
        return bytes.fromhex(app["keys"][key_no])

    def _deauth(self):
        self.channel = None
        self.auth_key_no = None

    def _mac_in(self, ins, header, body, n=None):
        """The command data of a MAC/Full command after checking its MACt (the last 8
        bytes of `body`). `n`: the data length the command must have (before the MAC).
        No MAC (or a wrong length): 91 7E; a wrong MAC: 91 1E."""
        ch = self.channel
        if ch is None:
            raise Refused(ev2.ST_PERMISSION_DENIED)
        if len(body) < 8 or (n is not None and len(body) != n + 8):
            raise Refused(ev2.ST_LENGTH_ERROR)
        data, mac = body[:-8], body[-8:]
        if not ct.equal(mac, ch.cmd_mac(ins, header, data)):
            raise Refused(ev2.ST_INTEGRITY_ERROR)
        return data

    def _session(self):
        ch = self.channel
        if ch is None:
            raise Refused(ev2.ST_PERMISSION_DENIED)
        return ch

    def _resp_mac(self, data=b""):
        ch = self._session()
        ch.cmd_ctr += 1
        return _sw(0, bytes(data) + ch.resp_mac(0, data))

    def _resp_full(self, data):
        ch = self._session()
        ch.cmd_ctr += 1
        enc = ch.encrypt_resp(data, ch.cmd_ctr)
        return _sw(0, enc + ch.resp_mac(0, enc))

    def _master_ok(self):
        return self.channel is not None and self.auth_key_no == 0

    # --- dispatch -----------------------------------------------------------------
    def process(self, apdu):
        apdu = bytes(apdu)
        if apdu[:2] == b"\xff\xca":
            return self.uid + b"\x90\x00"
        if len(apdu) < 5 or apdu[0] != 0x90:
            return b"\x6e\x00"
        ins = apdu[1]
        lc = apdu[4] if len(apdu) > 5 else 0
        data = apdu[5 : 5 + lc]
        if ins == ev2.CMD_ADDITIONAL_FRAME:
            if self._pending is not None:
                return self._finish(self._auth2(data), False)
            if self._in is not None:
                ins, got, total = self._in
                got += data
                if len(got) < total:
                    return _sw(ev2.ST_ADDITIONAL_FRAME)
                self._in = None
                return self._run(ins, bytes(got))
            if self._out:
                return self._next_frame()
            self._deauth()
            return _sw(ev2.ST_ILLEGAL_COMMAND)
        self._out = None
        self._in = None
        self._pending = None
        total = self._incoming_len(ins, data)
        if total is not None and len(data) < total:
            self._in = (ins, bytearray(data), total)
            return _sw(ev2.ST_ADDITIONAL_FRAME)
        return self._run(ins, data)

    def _run(self, ins, data):
        if self._table is None:
            self._table = self._handlers()
        handler = self._table.get(ins)
        if handler is None:
            resp = _sw(ev2.ST_ILLEGAL_COMMAND)
        else:
            try:
                resp = handler(ins, data)
            except Refused as e:
                resp = _sw(e.status)
        return self._finish(resp)

    def _finish(self, resp, chain=True):
        """Any error status ends the session (EV2); a long answer is chained (not the
        authentication's own frames)."""
        if resp[-1] not in (0x00, ev2.ST_ADDITIONAL_FRAME):
            self._deauth()
        body = resp[:-2]
        if not chain or len(body) <= self.frame or resp[-1] != 0x00:
            return resp
        self._out = [body[i : i + self.frame] for i in range(0, len(body), self.frame)]
        self._out_status = resp[-1]
        return self._next_frame()

    def _next_frame(self):
        out = self._out or [b""]
        frame = out.pop(0)
        if out:
            return _sw(ev2.ST_ADDITIONAL_FRAME, frame)
        self._out = None
        return _sw(self._out_status, frame)

    def _incoming_len(self, ins, data):
        """The full command data length of a command that may come in several frames."""
        if ins == ev2.CMD_CHANGE_KEY and self.channel is not None:
            return 1 + 32 + 8
        if ins == ev2.CMD_WRITE_DATA and len(data) >= 7:
            f = self._file(data)[0]
            if f is None:
                return None
            n = int.from_bytes(data[4:7], "little")
            if self.channel is None or f["comm"] == 0:
                return 7 + n
            return 7 + (n if f["comm"] == 1 else full_len(n)) + 8
        return None

    def _handlers(self):
        return {
            ev2.CMD_GET_VERSION: self._get_version,
            ev2.CMD_SELECT_APPLICATION: self._select,
            ev2.CMD_GET_APPLICATION_IDS: self._get_aids,
            ev2.CMD_AUTH_EV2_FIRST: self._auth1,
            ev2.CMD_GET_CARD_UID: self._get_card_uid,
            ev2.CMD_CREATE_APPLICATION: self._create_app,
            ev2.CMD_CREATE_STD_DATA_FILE: self._create_file,
            ev2.CMD_READ_DATA: self._read,
            ev2.CMD_WRITE_DATA: self._write,
            ev2.CMD_CHANGE_KEY: self._change_key,
            ev2.CMD_FORMAT_PICC: self._format,
            ev2.CMD_DELETE_APPLICATION: self._delete_app,
            ev2.CMD_GET_KEY_VERSION: self._get_key_version,
        }

    def _get_version(self, ins, data):
        """Three frames (7, 7, 14 bytes), as the card sends them whatever the frame size."""
        if self.channel is not None:
            raise Refused(ev2.ST_PERMISSION_DENIED)  # CommMode.MAC in a session: not supported
        third = self.uid + b"\x00\x00\x00\x00\x00" + b"\x30\x26"
        self._out = [self.SW, third]
        self._out_status = 0
        return _sw(ev2.ST_ADDITIONAL_FRAME, self.HW)

    def _select(self, ins, data):
        self._deauth()
        if len(data) != 3:
            return _sw(ev2.ST_LENGTH_ERROR)
        aid = _aid_hex(data)
        if aid != PICC_AID and aid not in self.state["apps"]:
            self.aid = PICC_AID
            return _sw(ev2.ST_APPLICATION_NOT_FOUND)
        self.aid = aid
        return _sw(0)

    def _get_aids(self, ins, data):
        if self.aid != PICC_AID:
            raise Refused(ev2.ST_ILLEGAL_COMMAND)
        out = b"".join(bytes.fromhex(a) for a in sorted(self.state["apps"]))
        if self.channel is not None:
            self._mac_in(ins, b"", data, 0)
            return self._resp_mac(out)
        return _sw(0, out)

    def _get_key_version(self, ins, data):
        """Plain without a session; CommMode.MAC (key number || MACt in, version || MACt
        out) within one."""
        if self.channel is not None:
            data = self._mac_in(ins, b"", data, 1)
        if len(data) != 1:
            raise Refused(ev2.ST_LENGTH_ERROR)
        key_no = data[0] & 0x3F
        if self._key(key_no) is None:
            raise Refused(ev2.ST_NO_SUCH_KEY)
        app = self._app()
        ver = bytes([app["key_versions"][key_no] if app is not None else 0])
        return self._resp_mac(ver) if self.channel is not None else _sw(0, ver)

    # --- authentication -----------------------------------------------------------
    def _auth1(self, ins, data):
        self._deauth()
        if len(data) < 2:
            return _sw(ev2.ST_LENGTH_ERROR)
        key = self._key(data[0])
        if key is None:
            return _sw(ev2.ST_NO_SUCH_KEY)
        rnd_b = self._rng(16)
        self._pending = (data[0], key, rnd_b)
        return _sw(ev2.ST_ADDITIONAL_FRAME, cbc_encrypt(AES(key), ZERO_IV, rnd_b))

    def _auth2(self, data):
        pending = self._pending
        self._pending = None
        if pending is None:
            return _sw(ev2.ST_ILLEGAL_COMMAND)
        key_no, key, rnd_b = pending
        if len(data) != 32:
            return _sw(ev2.ST_LENGTH_ERROR)
        aes = AES(key)
        plain = cbc_decrypt(aes, ZERO_IV, data)
        rnd_a, rnd_b2 = plain[:16], plain[16:]
        if not ct.equal(rnd_b2, ev2.rotl(rnd_b)):
            return _sw(ev2.ST_AUTHENTICATION_ERROR)
        ti = self._rng(4)
        enc_key, mac_key = ev2.session_keys(key, rnd_a, rnd_b)
        self.channel = ev2.SecureChannel(ti, enc_key, mac_key)
        self.auth_key_no = key_no
        return _sw(0, cbc_encrypt(aes, ZERO_IV, ti + ev2.rotl(rnd_a) + bytes(12)))

    # --- secure messaging commands --------------------------------------------------
    def _get_card_uid(self, ins, data):
        """CommMode.Full: MACt in, E(UID) || MACt out (AN12196 Table 28)."""
        self._mac_in(ins, b"", data, 0)
        return self._resp_full(self.uid)

    def _create_app(self, ins, data):
        if self.aid != PICC_AID:
            raise Refused(ev2.ST_ILLEGAL_COMMAND)
        if self.channel is not None:
            data = self._mac_in(ins, b"", data, 5)
        elif not self.state["picc_key_settings"] & 0x04:
            # creating applications needs the PICC master key (key settings bit 2 clear)
            raise Refused(ev2.ST_AUTHENTICATION_ERROR)
        if len(data) != 5:
            raise Refused(ev2.ST_LENGTH_ERROR)
        aid = _aid_hex(data[:3])
        if aid in self.state["apps"]:
            raise Refused(ev2.ST_DUPLICATE_ERROR)
        nkeys = data[4] & 0x0F
        if not data[4] & 0x80 or not 1 <= nkeys <= 14:
            raise Refused(ev2.ST_PARAMETER_ERROR)
        self.state["apps"][aid] = {
            "key_settings": data[3],
            "keys": [bytes(16).hex()] * nkeys,
            "key_versions": [0] * nkeys,
            "files": {},
        }
        self.save()
        return self._resp_mac() if self.channel is not None else _sw(0)

    def _create_file(self, ins, data):
        app = self._app()
        if app is None:
            raise Refused(ev2.ST_ILLEGAL_COMMAND)
        if self.channel is not None:
            data = self._mac_in(ins, b"", data, 7)
        if not (self._master_ok() or app["key_settings"] & 0x04):
            raise Refused(ev2.ST_PERMISSION_DENIED)
        if len(data) != 7:
            raise Refused(ev2.ST_LENGTH_ERROR)
        fno = str(data[0])
        if fno in app["files"]:
            raise Refused(ev2.ST_DUPLICATE_ERROR)
        size = int.from_bytes(data[4:7], "little")
        if not 1 <= size <= MAX_FILE:
            raise Refused(ev2.ST_PARAMETER_ERROR)
        app["files"][fno] = {"comm": data[1] & 0x03, "access": bytes(data[2:4]).hex(),
                             "data": bytes(size).hex()}
        self.save()
        return self._resp_mac() if self.channel is not None else _sw(0)

    def _file(self, data):
        app = self._app()
        if app is None or len(data) < 7:
            return None, None
        return app["files"].get(str(data[0])), data[:7]

    def _allowed(self, f, which):
        """Access right nibble (read or write) or RW grants the authenticated key; 0xE is free."""
        ar = bytes.fromhex(f["access"])
        rw, right = ar[0] >> 4, (ar[1] >> 4 if which == "r" else ar[1] & 0x0F)
        for k in (right, rw):
            if k == 0xE:
                return "free"
            if self.channel is not None and k == self.auth_key_no:
                return "key"
        return None

    def _read(self, ins, data):
        f, hdr = self._file(data)
        if f is None:
            raise Refused(ev2.ST_FILE_NOT_FOUND if len(data) >= 7 else ev2.ST_LENGTH_ERROR)
        if self.channel is not None and f["comm"] != 0:
            self._mac_in(ins, hdr, data[7:], 0)
        how = self._allowed(f, "r")
        if how is None:
            raise Refused(ev2.ST_PERMISSION_DENIED if self.channel is None else ev2.ST_AUTHENTICATION_ERROR)
        content = bytes.fromhex(f["data"])
        off = int.from_bytes(hdr[1:4], "little")
        n = int.from_bytes(hdr[4:7], "little") or (len(content) - off)
        if off + n > len(content):
            raise Refused(ev2.ST_BOUNDARY_ERROR)
        out = content[off : off + n]
        ch = self.channel
        if ch is None:
            return _sw(0, out)
        if f["comm"] == 3:
            return self._resp_full(out)
        if f["comm"] == 1:
            return self._resp_mac(out)
        ch.cmd_ctr += 1
        return _sw(0, out)

    def _write(self, ins, data):
        f, hdr = self._file(data)
        if f is None:
            raise Refused(ev2.ST_FILE_NOT_FOUND if len(data) >= 7 else ev2.ST_LENGTH_ERROR)
        n = int.from_bytes(hdr[4:7], "little")
        body = data[7:]
        if self.channel is not None and f["comm"] != 0:
            body = self._mac_in(ins, hdr, body, n if f["comm"] == 1 else full_len(n))
        how = self._allowed(f, "w")
        if how is None:
            raise Refused(ev2.ST_PERMISSION_DENIED if self.channel is None else ev2.ST_AUTHENTICATION_ERROR)
        if self.channel is not None and f["comm"] == 3:
            try:
                body = self.channel.decrypt_cmd(body)
            except ValueError:
                raise Refused(ev2.ST_INTEGRITY_ERROR) from None
        content = bytearray(bytes.fromhex(f["data"]))
        off = int.from_bytes(hdr[1:4], "little")
        if n != len(body):
            raise Refused(ev2.ST_LENGTH_ERROR)
        if off + n > len(content):
            raise Refused(ev2.ST_BOUNDARY_ERROR)
        content[off : off + n] = body
        f["data"] = bytes(content).hex()
        self.save()
        if self.channel is None:
            return _sw(0)
        if f["comm"] == 0:
            self.channel.cmd_ctr += 1
            return _sw(0)
        return self._resp_mac()

    def _change_key(self, ins, data):
        if self.channel is None:
            raise Refused(ev2.ST_PERMISSION_DENIED)
        if len(data) < 1:
            raise Refused(ev2.ST_LENGTH_ERROR)
        key_no = data[0] & 0x3F
        enc = self._mac_in(ins, data[:1], data[1:], 32)
        app = self._app()
        if not self._may_change(app, key_no):
            raise Refused(ev2.ST_PERMISSION_DENIED)
        try:
            plain = self.channel.decrypt_cmd(enc)
        except ValueError:
            raise Refused(ev2.ST_INTEGRITY_ERROR) from None
        old = self._key(key_no)
        if old is None:
            raise Refused(ev2.ST_NO_SUCH_KEY)
        if key_no == self.auth_key_no:
            if len(plain) != 17:
                raise Refused(ev2.ST_INTEGRITY_ERROR)
            new = plain[:16]
        else:
            if len(plain) != 21:
                raise Refused(ev2.ST_INTEGRITY_ERROR)
            new = xor(plain[:16], old)
            if not ct.equal(plain[17:21], ev2.crc32_desfire(new)):
                raise Refused(ev2.ST_INTEGRITY_ERROR)
        if app is None:
            self.state["picc_key"] = new.hex()
        else:
            app["keys"][key_no] = new.hex()
            app["key_versions"][key_no] = plain[16]
        self.save()
        if key_no == self.auth_key_no:
            self._deauth()
            return _sw(0)
        return self._resp_mac()

    def _may_change(self, app, key_no):
        """Key settings: bit 0 lets the master key change itself; bits 7-4 name the key
        that changes the others (0xE: each key itself, 0xF: frozen)."""
        auth = self.auth_key_no
        if app is None:
            return auth == 0 and key_no == 0 and self.state["picc_key_settings"] & 0x01
        ks = app["key_settings"]
        if key_no == 0:
            return auth == 0 and bool(ks & 0x01)
        right = ks >> 4
        if right == 0xE:
            return auth == key_no
        return right != 0xF and auth == right

    def _delete_app(self, ins, data):
        """Allowed to the PICC master key, or to the application's own master key while it
        is selected (CommMode.MAC after authentication)."""
        body = self._mac_in(ins, b"", data, 3)
        aid = _aid_hex(body)
        if aid not in self.state["apps"]:
            raise Refused(ev2.ST_APPLICATION_NOT_FOUND)
        if self.auth_key_no != 0 or self.aid not in (PICC_AID, aid):
            raise Refused(ev2.ST_PERMISSION_DENIED)
        del self.state["apps"][aid]
        self.save()
        resp = self._resp_mac()
        if self.aid == aid:  # the selected application is gone: back to PICC level
            self.aid = PICC_AID
            self._deauth()
        return resp

    def _format(self, ins, data):
        if self.aid != PICC_AID or not self._master_ok():
            raise Refused(ev2.ST_PERMISSION_DENIED)
        self._mac_in(ins, b"", data, 0)
        self.state["apps"] = {}
        self.save()
        return self._resp_mac()
