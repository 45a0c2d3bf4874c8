"""Input conditioning for the door: debounce and supervised-contact helpers. Pure logic.

A `Debouncer` accepts a raw reading at each poll and reports a new stable value once the
reading has stayed the same for `debounce_ms` (ticks in ms; `diff` is the board's
ticks_diff). Readings are compared with `==`, so it serves booleans and the supervised
contact's strings alike, without allocating.
"""

from ticks import ticks_diff

CONTACT_STATES = ("closed", "open", "short", "cut")


class Debouncer:
    def __init__(self, initial, debounce_ms=50, diff=None):
        self.value = initial  # the stable value
        self.debounce_ms = debounce_ms
        self._diff = diff or ticks_diff
        self._candidate = initial
        self._since = None

    def update(self, now, raw):
        """Feed a raw reading; True when the stable value changed (read `.value`)."""
        if raw == self.value:
            self._candidate = raw
            self._since = None
            return False
        if raw != self._candidate or self._since is None:
            self._candidate = raw
            self._since = now
        if self._diff(now, self._since) >= self.debounce_ms:
            self.value = raw
            self._since = None
            return True
        return False

    def reset(self, value):
        """Back to a stable `value` with nothing pending (a restarted door machine is told
        every input that differs from it again)."""
        self.value = value
        self._candidate = value
        self._since = None

    def pending(self):
        """True while a different reading waits to become stable."""
        return self._since is not None


def check_contact(state):
    """A reading from a board: one of CONTACT_STATES; anything else reads as a cut loop."""
    return state if state in CONTACT_STATES else "cut"
