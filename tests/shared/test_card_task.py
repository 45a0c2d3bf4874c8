# mpy-heapsize: 96K
# The card flow's decision on both interpreters: card step result + whitelist + mode -> door.
from wire import codes as ev
from firmware.card_task import decide
from wire.common import FLAG_LOW_ASSURANCE
from offline_cache import fmt
from host_tools import cache_build
from offline_cache.cache import Cache
from tests.scratch import fresh_dir
from wire.names import deny_reason_name

AUTH_FAILED = ev.CARD_AUTH_FAILED


class CardResult:
    """card_reader.card_session.CardResult's fields, as decide() reads them."""

    def __init__(self, code, ref=None, profile=None, low_assurance=False):
        self.code = code
        self.ok = code == 0
        self.ref = ref
        self.profile = profile
        self.low_assurance = low_assurance


OK = 0
KEY = b"c" * 32
SITE = 9
DAY = 20000
NOON = DAY * 86400 + 12 * 3600
GOOD, LOST, MASTER, DOOR3, OLD = b"g" * 8, b"l" * 8, b"m" * 8, b"3" * 8, b"o" * 8


def _cache():
    d = fresh_dir("cardtask-test")
    recs = [cache_build.pack_record(GOOD, fmt.ACTIVE, False, 0, DAY - 1, fmt.NO_END, 0x0001),
            cache_build.pack_record(LOST, fmt.LOST, True, 0, DAY - 1, fmt.NO_END, 0x0001),
            cache_build.pack_record(MASTER, fmt.ACTIVE, True, 0, DAY - 1, fmt.NO_END, 0x0001),
            cache_build.pack_record(DOOR3, fmt.ACTIVE, False, 0, DAY - 1, fmt.NO_END, 0x0008),
            cache_build.pack_record(OLD, fmt.ACTIVE, False, 0, DAY - 30, DAY - 2, 0x0001)]
    c = Cache(d, KEY, SITE)
    c.apply_bytes(cache_build.build(KEY, fmt.KIND_SNAPSHOT, 1, 0, SITE, 0xFFFF, 0, recs, {}, []))
    return c


_c = []


def cache():
    if not _c:
        _c.append(_cache())
    return _c[0]


def ok(ref, low=False):
    return CardResult(OK, ref, "desfire_ev2", low)


def test_a_whitelisted_card_is_granted():
    assert decide(ok(GOOD), cache(), 0, NOON, "normal") == (True, 0, False, 0)


def test_each_whitelist_refusal_has_its_reason_code():
    assert decide(ok(b"x" * 8), cache(), 0, NOON, "normal")[:2] == (False, ev.deny_code("unknown"))
    assert decide(ok(OLD), cache(), 0, NOON, "normal")[:2] == (False, ev.deny_code("expired"))
    assert decide(ok(DOOR3), cache(), 0, NOON, "normal")[:2] == (False, ev.deny_code("not_permitted"))
    assert decide(ok(DOOR3), cache(), 3, NOON, "normal")[:2] == (True, 0)
    assert decide(ok(GOOD), cache(), 0, None, "normal")[:2] == (False, ev.deny_code("clock_unset"))


def test_a_revoked_master_card_is_refused_even_in_lockdown():
    assert decide(ok(LOST), cache(), 0, NOON, "lockdown")[:2] == (False, ev.deny_code("lost"))


def test_lockdown_admits_master_cards_only():
    assert decide(ok(GOOD), cache(), 0, NOON, "lockdown")[:2] == (False, ev.deny_code("lockdown"))
    assert decide(ok(MASTER), cache(), 0, NOON, "lockdown") == (True, 0, True, 0)


def test_card_step_failures_are_refused_before_the_whitelist():
    r = CardResult(AUTH_FAILED, None, "desfire_ev2")
    assert decide(r, cache(), 0, NOON, "normal") == (False, ev.deny_code("auth_failed"), False, 0)


def test_no_cache_fails_secure():
    assert decide(ok(GOOD), None, 0, NOON, "normal")[:2] == (False, ev.deny_code("no_cache"))


def test_legacy_decisions_carry_the_low_assurance_flag():
    assert decide(ok(GOOD, True), cache(), 0, NOON, "normal") == (True, 0, False, FLAG_LOW_ASSURANCE)
    assert decide(ok(b"x" * 8, True), cache(), 0, NOON, "normal")[3] == FLAG_LOW_ASSURANCE


def test_every_deny_reason_code_is_unique_and_named():
    names = [n for n in ev.DENY_REASONS if n is not None]
    assert len(set(names)) == len(names)
    for name in names:
        assert deny_reason_name(ev.deny_code(name)) == name
    assert ev.deny_code("no_such_reason") == ev.deny_code("unknown") == 1
    assert ev.deny_code(None) == 1
