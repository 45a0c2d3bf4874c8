# Collections paced by allocation (firmware/gcpace.py), on both interpreters: a share of the
# heap between two collections once started, none while a pass holds it, holds nesting.
import gc

from firmware import gcpace


def _threshold():
    return gc.threshold() if hasattr(gc, "threshold") else None


def test_paced_from_start_held_while_a_pass_runs_and_holds_nest():
    before = _threshold()
    try:
        gcpace.start()
        if not hasattr(gc, "threshold"):  # CPython: nothing to pace, and nothing breaks
            gcpace.hold()
            gcpace.release()
            return
        heap = gc.mem_free() + gc.mem_alloc()
        every = _threshold()
        assert every >= 2048 and abs(every - max(2048, heap // 32)) < 64  # whole GC blocks
        gcpace.hold()
        assert _threshold() == -1
        gcpace.hold()  # a card session while a piece is handled
        gcpace.release()
        assert _threshold() == -1  # the outer hold still runs
        gcpace.release()
        assert _threshold() == every
        gcpace.release()  # one too many: no underflow, still paced
        gcpace.hold()
        assert _threshold() == -1
        gcpace.release()
        assert _threshold() == every
    finally:
        gcpace._every = 0
        gcpace._held = 0
        if before is not None:
            gc.threshold(before)


def test_a_hold_before_the_start_keeps_the_pace_off_until_released():
    before = _threshold()
    try:
        gcpace.hold()
        gcpace.start()
        if hasattr(gc, "threshold"):
            assert _threshold() == -1
        gcpace.release()
        if hasattr(gc, "threshold"):
            assert _threshold() >= 2048
    finally:
        gcpace._every = 0
        gcpace._held = 0
        if before is not None:
            gc.threshold(before)


def test_a_card_session_goes_first_until_it_ends():
    assert not gcpace.card_first()
    gcpace.card_session(True)
    try:
        assert gcpace.card_first()
    finally:
        gcpace.card_session(False)
    assert not gcpace.card_first()
