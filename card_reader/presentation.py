"""What makes one card presentation at the reader: the card flow's poll timing defaults and
the rule that tells a card still in the field from a new one. The door's card task runs them
(firmware/card_task.py); the card-flow bench times a presentation against the same figures.

Presence, not the UID, makes a presentation: a random-ID card shows a new UID at every
power-up, and a field that re-powers the card (or a card at the edge of the field) drops out
of a poll or two; neither is a new presentation.
"""

TIMING = {
    "poll_ms": 50,  # pause between two reader polls (after a card, or in polling mode)
    # The PN532 waits for a card itself (MaxRetries FF): a card is found within one
    # activation try of its arrival, not at the next poll. The task looks up every wait_ms
    # (the command stays pending meanwhile). 0: poll with MaxRetries 2 instead.
    "wait_ms": 200,
    # A wait pending this long is sent again: a PN532 that reset meanwhile (a brown-out when
    # the lock's coil switches, a reader swapped) has forgotten it and would never answer.
    # One frame and its ACK every 2 s on an empty field; a reader gone is found out by then.
    "renew_ms": 2000,
    "list_timeout_ms": 1000,  # polling mode: the PN532 answers at once with an empty field
    "lost_quiet_ms": 5000,  # one card_lost record per card within this
    "absent_ms": 300,  # the field empty this long (several polls) ends a presentation
}


def is_random_uid(uid):
    """ISO 14443-3: a 4-byte UID starting 0x08 is drawn afresh at each power-up."""
    return len(uid) == 4 and uid[0] == 0x08


def same_presentation(held, uid):
    """Whether `uid`, seen while the card `held` was last in the field, is that same card:
    the same UID, or a random UID after a random UID (a re-powered random-ID card). A
    different fixed UID is another card, decided at once."""
    return uid == held or (is_random_uid(uid) and is_random_uid(held))
