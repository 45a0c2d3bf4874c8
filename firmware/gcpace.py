"""Collections paced by allocation: the heap collected after every `heap / 32` bytes allocated
(2 KiB in a 64 KiB heap), not only when it is full, except in the passes that allocate the most.

Between two collections allocations march up past garbage, and what is kept from that time (a
connection's objects, a report, a status value) lands high and leaves holes under it when the
garbage goes: at 66 KiB the heap failed a 300-byte request with 3.8 KiB free in pieces of at most
224 bytes, and at 68 KiB a door refused whitelist pieces no_memory until the platform gave up.
Paced, the workload's smallest largest-free-block went 0.95 -> 8.75 KiB (docs/architecture.md).

A collection costs in proportion to the heap, so the pace is a share of it. The passes whose
allocations are all garbage (a whitelist piece, the scan and content hash of the file it
completes, a merge, a card session) `hold` the pacing: with one collection every 4 KiB, a 100k
snapshot took 21.6 s instead of 2.7 s on the 64-bit interpreter (a 384 KiB heap), and a card
decision 40 ms longer. What a hold allocated still counts: the first allocation after it
collects, so its garbage goes at once, before anything long-lived is made above it. Holds nest.

It also says when a card session is under way (`card_first`): the passes that can wait (a
whitelist piece, the uplink's next events batch) wait for its end, so their peaks do not add up.
"""

import gc

_MIN_EVERY = 2048
_card = [0]  # card sessions under way (0 or 1): see card_first
_every = 0  # 0: not started (a tool, a test, a port without gc.threshold)
_held = 0


def start():
    """Pace collections from now on (the firmware, once its long-lived objects are made)."""
    global _every
    if not hasattr(gc, "threshold"):
        return
    gc.collect()
    _every = max(_MIN_EVERY, (gc.mem_free() + gc.mem_alloc()) // 32)
    if not _held:
        gc.threshold(_every)


def hold():
    """No paced collection until the matching `release` (a collection when the heap is full,
    as always)."""
    global _held
    _held += 1
    if _every:
        gc.threshold(-1)


def release():
    global _held
    if _held:
        _held -= 1
    if _every and not _held:
        gc.threshold(_every)


def card_session(on):
    """A card session starts (True) or ends (False): `card_first` says so meanwhile."""
    _card[0] += 1 if on else -1


def card_first():
    """A card session is under way: a pass that can wait (a whitelist piece, the uplink's next
    events batch) waits for its end, so that their peaks do not add up in the heap. A
    session's garbage and the objects it keeps while it waits for the card are the largest
    part of a busy door's heap after its long-lived objects (at 64 KiB a piece arriving in
    a session found no 256 bytes in a row for its file); it takes about 90 ms."""
    return _card[0] > 0
