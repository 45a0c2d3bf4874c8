# The code tables of wire/codes.py on both interpreters: every card step failure is refused
# with the access_denied reason of its own name, and no two reasons share a number.
from wire import codes
from wire.names import EVENT_NAMES, deny_reason_name


def test_every_card_failure_has_the_deny_reason_of_its_name():
    for code, name in enumerate(codes.CARD_REASONS):
        if code == codes.CARD_OK or name is None:
            continue
        assert codes.card_reason(code) == name
        assert codes.deny_for_card(code) == codes.deny_code(name), name
        assert deny_reason_name(codes.deny_for_card(code)) == name


def test_a_card_code_without_a_name_is_refused_as_unknown():
    for code in (99, 10, -1):
        assert codes.card_reason(code) == "error"
        assert codes.deny_for_card(code) == codes.deny_code("unknown")
    assert codes.deny_for_card(codes.CARD_OK) == codes.deny_code("unknown")


def test_deny_reasons_and_event_codes_are_each_one_number():
    reasons = [n for n in codes.DENY_REASONS if n is not None]
    assert len(set(reasons)) == len(reasons)
    assert codes.deny_code("lockdown") == codes.DENY_LOCKDOWN
    assert len(set(EVENT_NAMES.values())) == len(EVENT_NAMES)
    assert EVENT_NAMES[codes.GAP] == "gap"
