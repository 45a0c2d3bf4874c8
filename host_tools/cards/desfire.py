# A MIFARE DESFire EV2-subset card (the PICC side), written from the public command
# descriptions (NXP MF3D(H)x2 datasheet summary, AN12196/AN12343 examples).
# ISO 7816-4 wrapped native commands in, responses out: `card.process(apdu) -> resp`.
#
# Plain Python shared by CPython (virtual cards on vpcd, tests) and MicroPython (the
# in-process card of the authentication benchmark): no annotations, no dataclasses.
#
# Supported: GetVersion, SelectApplication, GetApplicationIDs, AuthenticateEV2First,
# GetCardUID, CreateApplication, CreateStdDataFile, ReadData, WriteData, ChangeKey,
# FormatPICC, and the PC/SC pseudo-APDU FF CA 00 00 00 (UID) a contactless reader
# would answer. AES keys only; no chaining beyond one frame (files up to 40 bytes).
import json
import os

from crypto import ct, ev2
from crypto.aes import AES, ZERO_IV, cbc_decrypt, cbc_encrypt, xor

PICC_AID = "000000"
MAX_FRAME = 59


def _sw(status, data=b""):
    return bytes(data) + bytes([0x91, status])


def blank_state(uid):
    """A blank card: PICC master key all-zero AES, applications may be created freely."""
    return {"uid": bytes(uid).hex(), "picc_key": bytes(16).hex(), "picc_key_settings": 0x0F, "apps": {}}


def _aid_hex(aid):
    return bytes(aid).hex()


class DesfireCard:
    """State lives in a JSON-able dict; `path` (optional) makes it persistent."""

    # GetVersion: vendor NXP, type DESFire, subtype, EV2 (major 0x12), 8 KB, ISO 14443-2/3
    HW = b"\x04\x01\x01\x12\x00\x1a\x05"
    SW = b"\x04\x01\x01\x02\x00\x1a\x05"

    def __init__(self, state, path=None, rng=None):
        self.state = state
        self.path = path
        self._rng = rng or os.urandom
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
        self._frames = None

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

    def _mac_in(self, ins, header, body):
        """Check the MACt at the end of `body` for a MAC/Full command; returns the data or None."""
        ch = self.channel
        if ch is None or len(body) < 8:
            return None
        data, mac = body[:-8], body[-8:]
        if not ct.equal(mac, ch.cmd_mac(ins, header, data)):
            return None
        return data

    def _resp_mac(self, data=b""):
        ch = self.channel
        if ch is None:
            return _sw(ev2.ST_PERMISSION_DENIED)
        ch.cmd_ctr += 1
        return _sw(0, bytes(data) + ch.resp_mac(0, data))

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
        if ins != ev2.CMD_ADDITIONAL_FRAME:
            self._frames = None
            self._pending = None
        if self._table is None:
            self._table = self._handlers()
        handler = self._table.get(ins)
        if handler is None:
            self._deauth()
            return _sw(ev2.ST_ILLEGAL_COMMAND)
        return handler(ins, data)

    def _handlers(self):
        return {
            ev2.CMD_GET_VERSION: self._get_version,
            ev2.CMD_ADDITIONAL_FRAME: self._additional_frame,
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
        }

    def _get_version(self, ins, data):
        third = self.uid + b"\x00\x00\x00\x00\x00" + b"\x30\x26"
        self._frames = [self.SW, third]
        self._pending = None
        return _sw(ev2.ST_ADDITIONAL_FRAME, self.HW)

    def _additional_frame(self, ins, data):
        if self._pending is not None:
            return self._auth2(data)
        if self._frames:
            frame = self._frames.pop(0)
            return _sw(ev2.ST_ADDITIONAL_FRAME if self._frames else 0, frame)
        self._deauth()
        return _sw(ev2.ST_ILLEGAL_COMMAND)

    def _select(self, ins, data):
        self._deauth()
        self._pending = None
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
            return _sw(ev2.ST_ILLEGAL_COMMAND)
        out = b"".join(bytes.fromhex(a) for a in sorted(self.state["apps"]))
        if self.channel is not None:
            if self._mac_in(ins, b"", data) is None:
                self._deauth()
                return _sw(ev2.ST_INTEGRITY_ERROR)
            return self._resp_mac(out)
        return _sw(0, out)

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
        if self.channel is None:
            return _sw(ev2.ST_PERMISSION_DENIED)
        ch = self.channel
        ch.cmd_ctr += 1
        enc = ch.encrypt_resp(self.uid, ch.cmd_ctr)
        return _sw(0, enc + ch.resp_mac(0, enc))

    def _create_app(self, ins, data):
        if self.aid != PICC_AID:
            return _sw(ev2.ST_ILLEGAL_COMMAND)
        if self.channel is not None:
            data = self._mac_in(ins, b"", data)
            if data is None:
                self._deauth()
                return _sw(ev2.ST_INTEGRITY_ERROR)
        elif not self.state["picc_key_settings"] & 0x04:
            return _sw(ev2.ST_PERMISSION_DENIED)
        if len(data) != 5:
            self._deauth()
            return _sw(ev2.ST_LENGTH_ERROR)
        aid = _aid_hex(data[:3])
        if aid in self.state["apps"]:
            self._deauth()
            return _sw(ev2.ST_DUPLICATE_ERROR)
        nkeys = data[4] & 0x0F
        if not data[4] & 0x80 or not 1 <= nkeys <= 14:
            self._deauth()
            return _sw(ev2.ST_PARAMETER_ERROR)
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
            return _sw(ev2.ST_ILLEGAL_COMMAND)
        if self.channel is not None:
            data = self._mac_in(ins, b"", data)
            if data is None:
                self._deauth()
                return _sw(ev2.ST_INTEGRITY_ERROR)
        if not (self._master_ok() or app["key_settings"] & 0x04):
            self._deauth()
            return _sw(ev2.ST_PERMISSION_DENIED)
        if len(data) != 7:
            self._deauth()
            return _sw(ev2.ST_LENGTH_ERROR)
        fno = str(data[0])
        if fno in app["files"]:
            self._deauth()
            return _sw(ev2.ST_DUPLICATE_ERROR)
        size = int.from_bytes(data[4:7], "little")
        if not 1 <= size <= MAX_FRAME - 19:
            self._deauth()
            return _sw(ev2.ST_PARAMETER_ERROR)
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
            self._deauth()
            return _sw(ev2.ST_FILE_NOT_FOUND)
        how = self._allowed(f, "r")
        if how is None:
            self._deauth()
            return _sw(ev2.ST_PERMISSION_DENIED if self.channel is None else ev2.ST_AUTHENTICATION_ERROR)
        content = bytes.fromhex(f["data"])
        off = int.from_bytes(hdr[1:4], "little")
        n = int.from_bytes(hdr[4:7], "little") or (len(content) - off)
        if off + n > len(content):
            self._deauth()
            return _sw(ev2.ST_BOUNDARY_ERROR)
        out = content[off : off + n]
        if self.channel is None or how == "free" and f["comm"] == 0:
            return _sw(0, out)
        if f["comm"] != 0 and self._mac_in(ins, hdr, data[7:]) is None:
            self._deauth()
            return _sw(ev2.ST_INTEGRITY_ERROR)
        ch = self.channel
        if f["comm"] == 3:
            ch.cmd_ctr += 1
            enc = ch.encrypt_resp(out, ch.cmd_ctr)
            return _sw(0, enc + ch.resp_mac(0, enc))
        if f["comm"] == 1:
            return self._resp_mac(out)
        ch.cmd_ctr += 1
        return _sw(0, out)

    def _write(self, ins, data):
        f, hdr = self._file(data)
        if f is None:
            self._deauth()
            return _sw(ev2.ST_FILE_NOT_FOUND)
        how = self._allowed(f, "w")
        if how is None:
            self._deauth()
            return _sw(ev2.ST_PERMISSION_DENIED if self.channel is None else ev2.ST_AUTHENTICATION_ERROR)
        body = data[7:]
        if self.channel is not None and f["comm"] != 0:
            body = self._mac_in(ins, hdr, body)
            if body is None:
                self._deauth()
                return _sw(ev2.ST_INTEGRITY_ERROR)
            if f["comm"] == 3:
                try:
                    body = self.channel.decrypt_cmd(body)
                except ValueError:
                    self._deauth()
                    return _sw(ev2.ST_INTEGRITY_ERROR)
        content = bytearray(bytes.fromhex(f["data"]))
        off = int.from_bytes(hdr[1:4], "little")
        n = int.from_bytes(hdr[4:7], "little")
        if n != len(body) or off + n > len(content):
            self._deauth()
            return _sw(ev2.ST_BOUNDARY_ERROR)
        content[off : off + n] = body
        f["data"] = bytes(content).hex()
        self.save()
        if self.channel is None:
            return _sw(0)
        return self._resp_mac()

    def _change_key(self, ins, data):
        if self.channel is None:
            return _sw(ev2.ST_PERMISSION_DENIED)
        if len(data) < 1 + 32 + 8:
            self._deauth()
            return _sw(ev2.ST_LENGTH_ERROR)
        key_no = data[0] & 0x3F
        enc = self._mac_in(ins, data[:1], data[1:])
        if enc is None:
            self._deauth()
            return _sw(ev2.ST_INTEGRITY_ERROR)
        app = self._app()
        if not self._may_change(app, key_no):
            self._deauth()
            return _sw(ev2.ST_PERMISSION_DENIED)
        try:
            plain = self.channel.decrypt_cmd(enc)
        except ValueError:
            self._deauth()
            return _sw(ev2.ST_INTEGRITY_ERROR)
        old = self._key(key_no)
        if old is None:
            self._deauth()
            return _sw(ev2.ST_NO_SUCH_KEY)
        if key_no == self.auth_key_no:
            if len(plain) != 17:
                self._deauth()
                return _sw(ev2.ST_INTEGRITY_ERROR)
            new = plain[:16]
        else:
            if len(plain) != 21:
                self._deauth()
                return _sw(ev2.ST_INTEGRITY_ERROR)
            new = xor(plain[:16], old)
            if not ct.equal(plain[17:21], ev2.crc32_desfire(new)):
                self._deauth()
                return _sw(ev2.ST_INTEGRITY_ERROR)
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
        if self.channel is None:
            return _sw(ev2.ST_PERMISSION_DENIED)
        body = self._mac_in(ins, b"", data)
        if body is None or len(body) != 3:
            self._deauth()
            return _sw(ev2.ST_INTEGRITY_ERROR if body is None else ev2.ST_LENGTH_ERROR)
        aid = _aid_hex(body)
        if aid not in self.state["apps"]:
            self._deauth()
            return _sw(ev2.ST_APPLICATION_NOT_FOUND)
        if self.auth_key_no != 0 or self.aid not in (PICC_AID, aid):
            self._deauth()
            return _sw(ev2.ST_PERMISSION_DENIED)
        del self.state["apps"][aid]
        self.save()
        resp = self._resp_mac()
        if self.aid == aid:  # the selected application is gone: back to PICC level
            self.aid = PICC_AID
            self._deauth()
        return resp

    def _format(self, ins, data):
        if self.aid != PICC_AID or not self._master_ok():
            self._deauth()
            return _sw(ev2.ST_PERMISSION_DENIED)
        if self._mac_in(ins, b"", data) is None:
            self._deauth()
            return _sw(ev2.ST_INTEGRITY_ERROR)
        self.state["apps"] = {}
        self.save()
        return self._resp_mac()
