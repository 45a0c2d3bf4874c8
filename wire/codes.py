"""Event codes, access_denied reasons and card step results: one table each (docs/protocol.md,
"Event codes"). The door journals these numbers; the platform and the tools read them, and
name them with wire/names.py (EVENT_NAMES, deny_reason_name), which the door never imports.
"""

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

# Access
ACCESS_GRANTED = const(1)  # arg: method (1 card, 2 REX, 3 remote); payload: card ref
ACCESS_DENIED = const(2)  # arg: reason code; payload: card ref
# Door
DOOR_OPENED = const(10)
DOOR_CLOSED = const(11)
FORCED_OPEN = const(20)
CLOSER_FAULT_CLEARED = const(21)
HELD_OPEN_PREALARM = const(22)
HELD_OPEN = const(23)
HELD_OPEN_CLEARED = const(24)
CLOSER_FAULT = const(25)  # arg: 1 slow closing, 2 bouncing
SENSOR_TAMPER = const(26)  # arg: 1 short, 2 cut
SENSOR_TAMPER_CLEARED = const(27)
DEVICE_TAMPER = const(28)
DEVICE_TAMPER_CLEARED = const(29)
POWER_LOST = const(30)
POWER_RESTORED = const(31)  # payload: seconds without power (u32), UTC of the loss (u32, 0 unknown)
# Device
BOOT = const(40)  # arg: boot counter (low 16 bits)
TIME_SET = const(41)  # payload: epoch s (u32), monotonic s at set (u32)
JOURNAL_NEAR_FULL = const(42)
CACHE_UPDATED = const(43)
CACHE_REJECTED = const(44)
COMMAND_REJECTED = const(45)
MODE_CHANGED = const(46)
CONFIG_CHANGED = const(47)
SETUP_FAULT = const(48)  # arg: the SETUP_PARTS bits of the parts that disagree, found at boot
INBOUND_REFUSED = const(49)  # arg: messages refused since the last one; payload: (reason u8, count u16)*
GAP = const(0xFE)  # the journal's own gap record; payload: first and last lost seq (u32, u32)

# The tables below are tuples of constants, frozen into the image (a dict would be built in
# the door's heap at import): a name's code is its place (None where a code is unused).
KINDS = ("card", "rex", "remote")  # arg of access_granted 1, 2, 3 (and of a REX/remote refusal)

# Card step results (card_reader/card_session.py, `result.code`; the reason names are also
# access_denied reasons below).
CARD_OK = const(0)
CARD_NOT_DOOR_CARD = const(1)
CARD_AUTH_FAILED = const(2)
CARD_BAD_MAC = const(3)
CARD_LOST = const(4)
CARD_UID_MISMATCH = const(5)
CARD_BAD_CREDENTIAL = const(6)
CARD_WRONG_SITE = const(7)
CARD_UNSUPPORTED = const(8)
CARD_PROTOCOL_ERROR = const(9)
CARD_KEY_RETIRED = const(11)
CARD_REASONS = ("ok", "not_door_card", "auth_failed", "bad_mac", "card_lost", "uid_mismatch",
                "bad_credential", "wrong_site", "unsupported_card", "protocol_error", None,
                "key_retired")  # by result code


def card_reason(code):
    """The name of a card step result code ("error" for one this version does not know)."""
    name = CARD_REASONS[code] if 0 <= code < len(CARD_REASONS) else None
    return name or "error"


# access_denied reasons (arg), one table (docs/protocol.md): the whitelist's decisions
# (offline_cache.cache reasons), the door's own (lockdown, no keys), then the card step's
# failures, each by the name the card step gives it (CARD_REASONS).
DENY_LOCKDOWN = const(20)  # lockdown and not a master card
DENY_UNKNOWN = const(1)
DENY_REASONS = (
    None, "unknown", "lost", "suspended", "cancelled", "expired", "not_yet_valid",
    "outside_schedule", "not_permitted", "no_cache", "clock_unset",  # 1-10
    None, None, None, None, None, None, None, None, None, "lockdown",  # 20 (DENY_LOCKDOWN)
    None, None, None, None, None, None, None, None, None, None,
    "not_door_card", "auth_failed", "bad_mac", "card_lost", "uid_mismatch",  # 31-35
    "bad_credential", "wrong_site", "unsupported_card", "protocol_error", "no_keys",  # 36-40
    "key_retired",  # 41
)  # by code


def deny_code(reason):
    """The access_denied arg of a reason's name (`unknown`'s for a name it does not list)."""
    return DENY_REASONS.index(reason) if reason and reason in DENY_REASONS else DENY_UNKNOWN


def deny_for_card(card_code):
    """The access_denied reason of a failed card step (its result code): by name, no arithmetic."""
    return deny_code(card_reason(card_code))


# setup_fault arg bits: a door whose parts disagree refuses every card while it looks normal.
SETUP_PARTS = ("keys_site", "no_keys", "whitelist_refused", "keys_door")  # bits 1, 2, 4, 8
