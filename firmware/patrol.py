"""Patrol (巡检) / status reports: periodic, on demand, and at once when the alarms change.

The report is a flat dict (docs/protocol.md, status topic; docs/door.md for the fields).
Values owned by other parts of the firmware (journal, cache, clock, uptime) come from
`providers`: a dict of zero-argument callables, each optional:

    seq, journal_depth, cache_version, cache_hash, clock_synced, uptime_s, reader, setup
"""

from firmware import VERSION
from ticks import ticks_diff


def _get(providers, key, default, last=None):
    fn = providers.get(key)
    if fn is None:
        return default
    try:
        return fn()
    except Exception:  # a provider must never stop the patrol
        # Its last reported value, not the default: a default can say what is not so (no
        # `setup` reads as a door whose parts agree, and ends the platform's alarm).
        return last.get(key, default) if last else default


def build_report(machine, providers=None, last=None):
    """`last`: the report before, whose values stand in for providers that fail now."""
    p = providers or {}
    report = {
        "seq": _get(p, "seq", 0, last),
        "door": machine.door_state(),
        "alarms": machine.active_alarms(),
        "mode": machine.effective_mode(),
        "lock": machine.lock,
        "journal_depth": _get(p, "journal_depth", 0, last),
        "cache_version": _get(p, "cache_version", None, last),
        "cache_hash": _get(p, "cache_hash", None, last),
        "fw": VERSION,
        "clock_synced": bool(_get(p, "clock_synced", False, last)),
        "uptime_s": _get(p, "uptime_s", 0, last),
        "reader": _get(p, "reader", None, last),
        "clock_trusted": bool(_get(p, "clock_trusted", False, last)),
        "link": _get(p, "link", None, last),
        "key_gen": _get(p, "key_gen", None, last),
    }
    setup = _get(p, "setup", None, last)
    if setup:  # parts of the door that disagree (firmware/setup_check.py problems), if any
        report["setup"] = setup
    return report


class Patrol:
    """Decides when a report is due: every `interval_ms`, when asked (`request()`), and in
    the very next poll after the door's alarms or mode changed (a held-open door is
    reported at once, at the door and at the platform)."""

    def __init__(self, machine, providers=None, interval_ms=300000, now=0, diff=None):
        self.machine = machine
        self.providers = providers or {}
        self.interval_ms = interval_ms
        self._diff = diff or ticks_diff
        self._last = now
        self._asked = True  # a first report at start
        self._seen = (machine.alarms, machine.effective_mode())
        self.count = 0
        self.last_report = None

    def request(self):
        self._asked = True

    def due(self, now):
        m = self.machine
        if self._asked or self._diff(now, self._last) >= self.interval_ms:
            return True
        return m.alarms != self._seen[0] or m.effective_mode() != self._seen[1]

    def report(self, now):
        """Build the report and mark it as sent."""
        m = self.machine
        self._asked = False
        self._last = now
        self._seen = (m.alarms, m.effective_mode())
        self.count += 1
        self.last_report = build_report(m, self.providers, self.last_report)
        return self.last_report

    def ms_to_due(self, now):
        return max(0, self.interval_ms - self._diff(now, self._last))
