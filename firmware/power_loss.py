"""The controller's own power cuts (no backup battery), found from the journal at boot
(docs/door.md, `power_restored`)."""


def last_alive(journal):
    """(True, UTC seconds or 0) when the journal holds a record from before this boot: the
    last sign of life before the power went. (False, 0) on a first boot."""
    from journal_format import R_FLAGS, R_TIME
    from wire.common import FLAG_TIME_VALID

    last = journal.next_seq - 1
    if last < 1:
        return False, 0
    recs = journal.read(last, 1)
    if recs and recs[0][R_FLAGS] & FLAG_TIME_VALID:
        return True, recs[0][R_TIME]
    return True, 0


def outage(seen, lost_at, cause, now):
    """The outage in seconds (0: unknown) when this boot follows a loss of power, else None.
    `seen`, `lost_at`: last_alive(); `cause`: the board's reset_cause() (None: it cannot
    tell, taken as a power-up); `now`: the board clock's time() (None: it did not survive)."""
    if not seen or (cause is not None and cause != "power"):
        return None
    return int(now - lost_at) if now is not None and lost_at else 0
