"""Event codes (protocol v1, one table: docs/protocol.md) and the recorder that journals them.

Every event goes to the power-safe journal first; the uplink is only woken. Nothing on the
card-to-relay path waits for the network.
"""

import struct

from firmware.journal import CODE_GAP, FLAG_TIME_VALID, MS_UNTRUSTED

# Access
ACCESS_GRANTED = 1  # arg: method (1 card, 2 REX, 3 remote); payload: card ref
ACCESS_DENIED = 2  # arg: reason code; payload: card ref
# Door
DOOR_OPENED = 10
DOOR_CLOSED = 11
FORCED_OPEN = 20
CLOSER_FAULT_CLEARED = 21
HELD_OPEN_PREALARM = 22
HELD_OPEN = 23
HELD_OPEN_CLEARED = 24
CLOSER_FAULT = 25  # arg: 1 slow closing, 2 bouncing
SENSOR_TAMPER = 26  # arg: 1 short, 2 cut
SENSOR_TAMPER_CLEARED = 27
DEVICE_TAMPER = 28
DEVICE_TAMPER_CLEARED = 29
POWER_LOST = 30
POWER_RESTORED = 31  # payload: seconds without power (u32), UTC of the loss (u32, 0 unknown)
# Device
BOOT = 40  # arg: boot counter (low 16 bits)
TIME_SET = 41  # payload: epoch s (u32), monotonic s at set (u32)
JOURNAL_NEAR_FULL = 42
CACHE_UPDATED = 43
CACHE_REJECTED = 44
COMMAND_REJECTED = 45
MODE_CHANGED = 46
CONFIG_CHANGED = 47
SETUP_FAULT = 48  # arg: SETUP_BITS of the parts that disagree, found at boot
INBOUND_REFUSED = 49  # arg: messages refused since the last one; payload: (reason u8, count u16)*
GAP = CODE_GAP  # payload: first and last lost seq (u32, u32)

# access_denied reasons (arg). Whitelist decisions (offline_cache.cache reasons), then the
# card step's failures (firmware/card_session.py codes + 30). One table: docs/protocol.md.
DENY_REASONS = {
    "unknown": 1, "lost": 2, "suspended": 3, "cancelled": 4, "expired": 5,
    "not_yet_valid": 6, "outside_schedule": 7, "not_permitted": 8, "no_cache": 9,
    "clock_unset": 10, "lockdown": 20,
    "not_door_card": 31, "auth_failed": 32, "bad_mac": 33, "card_lost": 34,
    "uid_mismatch": 35, "bad_credential": 36, "wrong_site": 37, "unsupported_card": 38,
    "protocol_error": 39, "no_keys": 40, "key_retired": 41,
}
DENY_CARD_BASE = 30


def deny_reason_name(code):
    for name in DENY_REASONS:
        if DENY_REASONS[name] == code:
            return name
    return "reason_%d" % code


NAMES = {
    ACCESS_GRANTED: "access_granted", ACCESS_DENIED: "access_denied",
    DOOR_OPENED: "door_opened", DOOR_CLOSED: "door_closed", FORCED_OPEN: "forced_open",
    HELD_OPEN_PREALARM: "held_open_prealarm", HELD_OPEN: "held_open",
    HELD_OPEN_CLEARED: "held_open_cleared", CLOSER_FAULT: "closer_fault",
    CLOSER_FAULT_CLEARED: "closer_fault_cleared",
    SENSOR_TAMPER: "sensor_tamper", SENSOR_TAMPER_CLEARED: "sensor_tamper_cleared",
    DEVICE_TAMPER: "device_tamper", DEVICE_TAMPER_CLEARED: "device_tamper_cleared",
    POWER_LOST: "power_lost", POWER_RESTORED: "power_restored", BOOT: "boot",
    TIME_SET: "time_set", JOURNAL_NEAR_FULL: "journal_near_full",
    CACHE_UPDATED: "cache_updated", CACHE_REJECTED: "cache_rejected",
    COMMAND_REJECTED: "command_rejected", MODE_CHANGED: "mode_changed",
    CONFIG_CHANGED: "config_changed", SETUP_FAULT: "setup_fault",
    INBOUND_REFUSED: "inbound_refused", GAP: "gap",
}
# setup_fault arg bits: a door whose parts disagree refuses every card while it looks normal.
SETUP_BITS = {"keys_site": 1, "no_keys": 2, "whitelist_refused": 4, "keys_door": 8}


class Uptime:
    """Time since boot from a tick counter that wraps (every 2**30 ms, about 12 days, on the
    ESP32, and a difference is only good for half of that): added up from reading to reading,
    so it stays right as long as it is read at least every few days (the door task reads it at
    every poll). Kept as seconds plus milliseconds: a count of milliseconds would pass the
    32-bit port's small-integer range after 12 days, and then allocate at every poll."""

    def __init__(self, clock):
        self.clock = clock
        self._last = clock.ticks_ms()
        self._s = 0
        self._ms = 0  # 0..999, beyond _s

    def update(self):
        now = self.clock.ticks_ms()
        d = self.clock.ticks_diff(now, self._last)
        self._last = now
        if d > 0:
            d += self._ms
            self._s += d // 1000
            self._ms = d % 1000

    def seconds(self):
        self.update()
        return self._s

    def split(self):
        """(seconds, milliseconds 0-999) since boot."""
        self.update()
        return self._s, self._ms

    def ms(self):
        """Milliseconds since boot (a large integer after 12 days on the ESP32: not for the
        door's loop)."""
        self.update()
        return self._s * 1000 + self._ms


class Recorder:
    """Stamps events with the clock (UTC when set, else seconds since boot) and journals them."""

    def __init__(self, journal, clock, boot):
        self.journal = journal
        self.clock = clock
        self.boot = boot
        self.uptime = Uptime(clock)
        self.listeners = []  # callables(seq, code, arg): the uplink's kick, the status report
        # `journal_near_full` marks the crossing only: a journal still near full at boot was
        # reported when it crossed, in an earlier boot (not again at every boot).
        self.near_full_reported = journal.near_full()

    def mono_s(self):
        return self.uptime.seconds()

    def record(self, code, arg=0, payload=b"", flags=0):
        now = self.clock.time()
        if now is None:
            t, frac = self.uptime.split()
        else:
            t, frac = int(now), int((now - int(now)) * 1000)
            flags |= FLAG_TIME_VALID
            if not self.clock.trusted:
                frac |= MS_UNTRUSTED  # the platform places it by this boot's time_set events
        seq = self.journal.append(code, flags, self.boot & 0xFFFF, t, frac, arg & 0xFFFF, payload)
        for fn in self.listeners:
            fn(seq, code, arg)
        if self.journal.near_full():
            if not self.near_full_reported:
                self.near_full_reported = True
                self.record(JOURNAL_NEAR_FULL, 0, struct.pack("<II", self.journal.depth(),
                                                              self.journal.capacity))
        else:
            self.near_full_reported = False
        return seq
