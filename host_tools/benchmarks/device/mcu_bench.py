# mypy: ignore-errors
# Instruction counts on the bare-metal board (doorctl mcu run; host_tools/benchmarks/mcu.py).
# Every figure is mps2.insn() around one operation, in a run from reset with no input, so it
# repeats exactly. Sections of an operation are counted by wrapping its parts ("of which").
#   mcu_bench.py decision N      a granted and an unknown card against an N-card whitelist
#   mcu_bench.py cmac            AES-CMAC over 64 bytes
#   mcu_bench.py ev2 N           a card step against a card simulated in the guest, then the
#                                decision against an N-card whitelist (the card's own work
#                                is left out)
#   mcu_bench.py door_event      a granted card at the door machine, recorded in the journal
# prints: "fig NAME VALUE" lines
import gc
import struct
import sys

import mps2

insn = mps2.insn
KEY = b"bench-cache-key-0123456789abcdef"
SITE = 1
NOW = 20000 * 86400 + 12 * 3600
SPREAD = 0xA7C5AC471B5  # refs i * SPREAD + 1: sorted, unique, differing from the first byte on


def fig(name, value):
    print("fig", name, value)


def ref_of(i):
    return struct.pack(">Q", i * SPREAD + 1)


class Sections:
    """Counts instructions spent in named callables (wrapped in place)."""

    def __init__(self):
        self.counts = {}

    def wrap(self, owner, attr, name):
        orig = getattr(owner, attr)
        counts = self.counts
        counts[name] = 0

        def wrapped(*args):
            a = insn()
            r = orig(*args)
            counts[name] += insn() - a
            return r

        setattr(owner, attr, wrapped)

    def reset(self):
        for k in self.counts:
            self.counts[k] = 0


def whitelist(n):
    """An n-card signed snapshot installed on littlefs, as the uplink would leave it."""
    import os

    from board.mcu_qemu import McuBoard
    from host_tools import cache_build
    from offline_cache import fmt
    from offline_cache.cache import Cache

    board = McuBoard()
    board.mount()
    os.mkdir("/flash/wl")
    c = Cache("/flash/wl", KEY, SITE)

    def records():
        for i in range(n):
            yield cache_build.pack_record(ref_of(i), fmt.ACTIVE, False, 0, 19000, fmt.NO_END, 1)

    with open(c.incoming_path(), "wb") as f:
        cache_build.write(f, KEY, fmt.KIND_SNAPSHOT, 1, 0, SITE, 0, 0, n, records(), {}, [])
    c.apply(c.incoming_path())
    return board, c


def decision(n):
    from offline_cache import cache as cmod

    board, c = whitelist(n)
    known, unknown = ref_of(n // 2 + 1), struct.pack(">Q", (n // 2 + 1) * SPREAD + 2)
    cases = (("decision", known, True), ("decision_unknown", unknown, False))

    def once(ref, reset=None):
        c.decide(ref, 0, NOW)  # once before: the same state for every count
        if reset is not None:
            reset()
        gc.collect()
        a = insn()
        got = c.decide(ref, 0, NOW)
        return insn() - a, got

    for name, ref, want in cases:
        total, got = once(ref)
        if got[0] != want:
            raise SystemExit("decision %s: %r" % (name, got))
        fig("mcu.insn_%s" % name, total)
    # Sections: the same decisions with their parts wrapped (the wrappers' own instructions are
    # in these runs only, not in the totals above).
    s = Sections()
    s.wrap(c, "_locate", "lookup")
    s.wrap(cmod.Table, "_read", "flash_read")
    for name, ref, _want in cases:
        once(ref, s.reset)
        for k, v in s.counts.items():
            fig("mcu.section.%s.%s" % (name, k), v)


def cmac():
    from crypto.cmac import cmac as mac

    key, msg = bytes(range(16)), bytes(range(64))
    mac(key, msg)
    gc.collect()
    a = insn()
    mac(key, msg)
    fig("mcu.insn_cmac64", insn() - a)


def ev2(n):
    from card_reader import card_session as cs
    from crypto import aes
    from crypto.keystore import SoftwareKeyStore
    from host_tools.cards.desfire import DesfireCard, blank_state
    from wire import card_profile as profile

    board, c = whitelist(n)
    uid = bytes.fromhex("04112233445566")
    ks = SoftwareKeyStore(SITE, b"DOOR\x00\x00\x00\x07",
                          {"app_master": b"\x01" * 16, "door_read": b"\x02" * 16,
                           "card_ref": b"\x03" * 32})
    state = blank_state(uid)
    aid = profile.DOOR_AID
    state["apps"][aid.hex()] = {
        "key_settings": 0x0B,
        "keys": [ks.derive_card_key(uid, aid, "app_master").hex(),
                 ks.derive_card_key(uid, aid, "door_read").hex()],
        "key_versions": [1, 1],
        "files": {"1": {"comm": 1, "access": "0010",
                        "data": profile.encode_credential(SITE, bytes(16)).hex()}},
    }
    card = DesfireCard(state)
    card_insn = [0]

    def transceive(apdu):
        a = insn()
        r = card.process(apdu)
        card_insn[0] += insn() - a
        return r

    session = cs.CardSession(ks)

    def once():
        gc.collect()
        card_insn[0] = 0
        a = insn()
        res = session.read(transceive, uid, 0x20)
        mid = insn()
        got = c.decide(res.ref, 0, NOW) if res.ok else None
        end = insn()
        if not res.ok:
            raise SystemExit("card step failed: " + res.reason)
        return end - a - card_insn[0], mid - a - card_insn[0], end - mid, got

    once()  # once before, as for the decision
    total, step, decide, _ = once()
    fig("mcu.insn_ev2_session", total)
    fig("mcu.section.ev2_session.card_step", step)
    fig("mcu.section.ev2_session.decision", decide)
    fig("mcu.section.ev2_session.card_own_work_excluded", card_insn[0])
    # Sections: another session with its parts wrapped (their cost is not in the figures above).
    from crypto.cmac import CMAC

    s = Sections()
    s.wrap(ks, "derive_card_key", "key_diversification")
    s.wrap(aes.AES, "encrypt_block", "aes_encrypt_block")
    s.wrap(aes.AES, "cbc", "aes_cbc")
    s.wrap(CMAC, "mac", "cmac")
    s.reset()
    once()
    for k, v in s.counts.items():
        fig("mcu.section.ev2_session.%s" % k, v)


def door_event():
    from board.mcu_qemu import McuBoard
    from firmware.door import DoorMachine
    from firmware.events import Recorder
    from firmware.journal import Journal

    board = McuBoard()
    journal = Journal(board.journal_dev)
    rec = Recorder(journal, board.clock, 1)
    cfg = {"unlock_ms": 5000, "prealarm_ms": 20000, "held_open_ms": 30000,
           "closer_limit_ms": 15000, "closer_slow_count": 3, "bounce_ms": 1500,
           "closer_bounce_count": 3}
    m = DoorMachine(cfg, 0, rec.record)
    t = [1000]

    def once():
        m.tick(t[0] + 10000)  # the last grant's window ended: the door is locked again
        t[0] += 20000
        gc.collect()
        a = insn()
        m.grant(t[0], "card", ref=b"\x01\x02\x03\x04\x05\x06\x07\x08")
        return insn() - a

    for _ in range(3):  # the last one counts: journal and machine warmed up
        total = once()
    fig("mcu.insn_door_event", total)
    s = Sections()  # another grant with the journal append wrapped
    s.wrap(journal, "append", "journal_append")
    s.reset()
    once()
    for k, v in s.counts.items():
        fig("mcu.section.door_event.%s" % k, v)


mode = sys.argv[1]
if mode == "decision":
    decision(int(sys.argv[2]))
elif mode == "cmac":
    cmac()
elif mode == "ev2":
    ev2(int(sys.argv[2]))
elif mode == "door_event":
    door_event()
else:
    raise SystemExit("unknown mode " + mode)
