"""Patrol (巡检) / status reports: periodic, on demand, and at once when the alarms change.

The report is a flat dict (docs/protocol.md, status topic; docs/door.md for the fields).
Values owned by other parts of the firmware (journal, cache, clock, uptime) come from
`providers`: one callable(key) that returns the value, or ABSENT when it has none for that key
(one bound method on the door, not a closure per field kept for as long as the door runs),
or, for tests and tools, a dict of zero-argument callables, each optional:

    seq, journal_depth, cache_version, cache_hash, clock_synced, uptime_s, reader, setup,
    clock_trusted, link, key_gen
"""

from firmware import VERSION
from ticks import ticks_diff


ABSENT = object()  # a provider's answer for a key it does not provide


def _from_dict(providers):
    def value(key):
        fn = providers.get(key)
        return ABSENT if fn is None else fn()

    return value


def source(providers):
    """The callable(key) behind `providers` (a callable, a dict of callables, or None)."""
    if providers is None:
        return _from_dict({})
    return _from_dict(providers) if isinstance(providers, dict) else providers


def _get(p, key, default, last=None):
    try:
        v = p(key)
    except Exception:  # a provider must never stop the patrol
        # Its last reported value, not the default: a default can say what is not so (no
        # `setup` reads as a door whose parts agree, and ends the platform's alarm).
        return last.get(key, default) if last else default
    return default if v is ABSENT else v


def build_report(machine, providers=None, last=None):
    """`last`: the report before, whose values stand in for providers that fail now."""
    p = source(providers)
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
        self.providers = source(providers)
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
