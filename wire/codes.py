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
SETUP_FAULT = const(48)  # arg: SETUP_BITS of the parts that disagree, found at boot
INBOUND_REFUSED = const(49)  # arg: messages refused since the last one; payload: (reason u8, count u16)*
GAP = const(0xFE)  # the journal's own gap record; payload: first and last lost seq (u32, u32)

KINDS = {"card": 1, "rex": 2, "remote": 3}  # arg of access_granted (and of a REX/remote refusal)

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
CARD_REASONS = {
    CARD_OK: "ok", CARD_NOT_DOOR_CARD: "not_door_card", CARD_AUTH_FAILED: "auth_failed",
    CARD_BAD_MAC: "bad_mac", CARD_LOST: "card_lost", CARD_UID_MISMATCH: "uid_mismatch",
    CARD_BAD_CREDENTIAL: "bad_credential", CARD_WRONG_SITE: "wrong_site",
    CARD_UNSUPPORTED: "unsupported_card", CARD_PROTOCOL_ERROR: "protocol_error",
    CARD_KEY_RETIRED: "key_retired",
}

# access_denied reasons (arg), one table (docs/protocol.md): the whitelist's decisions
# (offline_cache.cache reasons), the door's own (lockdown, no keys), then the card step's
# failures, each by the name the card step gives it (CARD_REASONS).
DENY_LOCKDOWN = const(20)  # lockdown and not a master card
DENY_REASONS = {
    "unknown": 1, "lost": 2, "suspended": 3, "cancelled": 4, "expired": 5,
    "not_yet_valid": 6, "outside_schedule": 7, "not_permitted": 8, "no_cache": 9,
    "clock_unset": 10, "lockdown": DENY_LOCKDOWN,
    "not_door_card": 31, "auth_failed": 32, "bad_mac": 33, "card_lost": 34,
    "uid_mismatch": 35, "bad_credential": 36, "wrong_site": 37, "unsupported_card": 38,
    "protocol_error": 39, "no_keys": 40, "key_retired": 41,
}


def deny_for_card(card_code):
    """The access_denied reason of a failed card step (its result code): by name, no arithmetic."""
    return DENY_REASONS.get(CARD_REASONS.get(card_code, ""), DENY_REASONS["unknown"])


# setup_fault arg bits: a door whose parts disagree refuses every card while it looks normal.
SETUP_BITS = {"keys_site": 1, "no_keys": 2, "whitelist_refused": 4, "keys_door": 8}
