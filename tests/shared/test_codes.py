# The code tables of wire/codes.py on both interpreters: every card step failure is refused
# with the access_denied reason of its own name, and no two reasons share a number.
from wire import codes
from wire.names import EVENT_NAMES, deny_reason_name


def test_every_card_failure_has_the_deny_reason_of_its_name():
    for code, name in codes.CARD_REASONS.items():
        if code == codes.CARD_OK:
            continue
        assert codes.deny_for_card(code) == codes.DENY_REASONS[name], name
        assert deny_reason_name(codes.deny_for_card(code)) == name


def test_a_card_code_without_a_name_is_refused_as_unknown():
    assert codes.deny_for_card(99) == codes.DENY_REASONS["unknown"]


def test_deny_reasons_and_event_codes_are_each_one_number():
    reasons = list(codes.DENY_REASONS.values())
    assert len(set(reasons)) == len(reasons)
    assert codes.DENY_REASONS["lockdown"] == codes.DENY_LOCKDOWN
    assert len(set(EVENT_NAMES.values())) == len(EVENT_NAMES)
    assert EVENT_NAMES[codes.GAP] == "gap"
