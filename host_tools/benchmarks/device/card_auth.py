# Door-side cost of the DESFire EV2 card step against an in-process simulated card.
# Runs under MicroPython (device packages as .mpy, the card simulator compiled
# too; 64K for the door + 16K for the simulator) and CPython (baseline).  Time and
# AES blocks spent inside the card simulator are subtracted: the figures are the
# door's own work.
#   <interpreter> card_auth.py N
# prints: result auth_ms session_ms blocks_auth blocks_session door_modules_heap_bytes
import gc
import sys

gc.collect()
_HEAP0 = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
from card_reader import card_session as cs  # noqa: E402  (heap measured around these imports)
from crypto import aes  # noqa: E402  (heap measured around these imports)
from crypto.ev2 import Reader  # noqa: E402  (heap measured around these imports)
from crypto.keystore import SoftwareKeyStore  # noqa: E402  (heap measured around these imports)
from wire import card_profile as profile  # noqa: E402  (heap measured around these imports)

gc.collect()
DOOR_HEAP = gc.mem_alloc() - _HEAP0 if hasattr(gc, "mem_alloc") else 0
from host_tools.cards.desfire import DesfireCard, blank_state  # noqa: E402  (heap measured around these imports)

try:
    from time import ticks_diff, ticks_us

    def now_us():
        return ticks_us()

    def diff_us(a, b):
        return ticks_diff(a, b)
except ImportError:
    from time import perf_counter

    def now_us():
        return perf_counter() * 1e6

    def diff_us(a, b):
        return a - b

UID = bytes.fromhex("04112233445566")
KS = SoftwareKeyStore(7, b"DOOR\x00\x00\x00\x07",
                      {"app_master": b"\x01" * 16, "door_read": b"\x02" * 16, "card_ref": b"\x03" * 32})


def make_card():
    state = blank_state(UID)
    aid = profile.DOOR_AID
    state["apps"][aid.hex()] = {
        "key_settings": 0x0B,
        "keys": [KS.derive_card_key(UID, aid, "app_master").hex(),
                 KS.derive_card_key(UID, aid, "door_read").hex()],
        "key_versions": [1, 1],
        "files": {"1": {"comm": 1, "access": "0010", "data": profile.encode_credential(7, bytes(16)).hex()}},
    }
    return DesfireCard(state)


class Meter:
    """A transceive that keeps the card's time and AES blocks out of the door's account."""

    def __init__(self, card):
        self.card = card
        self.card_us = 0
        self.card_blocks = 0

    def __call__(self, apdu):
        b0 = aes.blocks()
        t0 = now_us()
        resp = self.card.process(apdu)
        self.card_us += diff_us(now_us(), t0)
        self.card_blocks += aes.blocks() - b0
        return resp


def main():
    n = int(sys.argv[1])
    card = make_card()
    session = cs.CardSession(KS)
    key = KS.derive_card_key(UID, profile.DOOR_AID, "door_read")
    auth_us = 0
    session_us = 0
    blocks_auth = 0
    blocks_session = 0
    for _ in range(n):
        gc.collect()
        # authentication alone (select first, outside the measure)
        m = Meter(card)
        r = Reader(m)
        r.select_application(profile.DOOR_AID)
        m.card_us = 0
        m.card_blocks = 0
        b0 = aes.blocks()
        t0 = now_us()
        r.authenticate(key, profile.KEY_DOOR_READ)
        auth_us += diff_us(now_us(), t0) - m.card_us
        blocks_auth = aes.blocks() - b0 - m.card_blocks
        # the whole card step of the door flow
        m = Meter(card)
        b0 = aes.blocks()
        t0 = now_us()
        res = session.read(m, UID, 0x20)
        session_us += diff_us(now_us(), t0) - m.card_us
        blocks_session = aes.blocks() - b0 - m.card_blocks
        if not res.ok:
            raise SystemExit("card step failed: " + res.reason)
    print("result %.4f %.4f %d %d %d" % (auth_us / n / 1000, session_us / n / 1000, blocks_auth,
                                         blocks_session, DOOR_HEAP))


main()
