"""Names for people of the door's numbers (wire/codes.py): event codes and access_denied
reasons, as the platform's lists, `doorctl monitor` and the demo print them. Host side: the
door journals numbers only and never imports this module, so these tables stay out of its
heap (docs/protocol.md, "Event codes")."""

from wire import codes

EVENT_NAMES = {
    codes.ACCESS_GRANTED: "access_granted", codes.ACCESS_DENIED: "access_denied",
    codes.DOOR_OPENED: "door_opened", codes.DOOR_CLOSED: "door_closed",
    codes.FORCED_OPEN: "forced_open",
    codes.HELD_OPEN_PREALARM: "held_open_prealarm", codes.HELD_OPEN: "held_open",
    codes.HELD_OPEN_CLEARED: "held_open_cleared", codes.CLOSER_FAULT: "closer_fault",
    codes.CLOSER_FAULT_CLEARED: "closer_fault_cleared",
    codes.SENSOR_TAMPER: "sensor_tamper", codes.SENSOR_TAMPER_CLEARED: "sensor_tamper_cleared",
    codes.DEVICE_TAMPER: "device_tamper", codes.DEVICE_TAMPER_CLEARED: "device_tamper_cleared",
    codes.POWER_LOST: "power_lost", codes.POWER_RESTORED: "power_restored", codes.BOOT: "boot",
    codes.TIME_SET: "time_set", codes.JOURNAL_NEAR_FULL: "journal_near_full",
    codes.CACHE_UPDATED: "cache_updated", codes.CACHE_REJECTED: "cache_rejected",
    codes.COMMAND_REJECTED: "command_rejected", codes.MODE_CHANGED: "mode_changed",
    codes.CONFIG_CHANGED: "config_changed", codes.SETUP_FAULT: "setup_fault",
    codes.INBOUND_REFUSED: "inbound_refused", codes.GAP: "gap",
}


def deny_reason_name(code):
    """The access_denied reason's name of `code` (reason_N for one this version does not know)."""
    names = codes.DENY_REASONS
    name = names[code] if 0 <= code < len(names) else None
    return name or "reason_%d" % code
