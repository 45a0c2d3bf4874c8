# mpy-heapsize: 256K
# A whitelist piece, or the install it completes, that finds no heap on a busy door: the state
# answers at once, so the platform's push (which sends nothing more until a state comes) goes
# on from what the door holds instead of ending "no_answer". On every interpreter.
# (256K: the whitelist builder and the platform's codec are compiled from source beside the
# door's modules.)
import asyncio

import firmware.cache_sync as cs
from offline_cache import fmt
from host_tools import cache_build
from offline_cache.cache import Cache
from tests.cache_cards import NOON, card, ref
from tests.scratch import fresh_dir
from wire.platform import decode_cache_state, encode_cache_chunk

KEY = b"k" * 32
SITE = 7
STEP = 256


def snap(version, recs):
    return cache_build.build(KEY, fmt.KIND_SNAPSHOT, version, 0, SITE, 0xFFFF, 0, recs, {}, [])


def _door():
    c = Cache(fresh_dir("cache-sync-memory"), KEY, SITE)
    c.apply_bytes(snap(1, [card(1)]))
    sync = cs.CacheSync(c)
    refused = []
    sync.on_refused = lambda reason, where: refused.append(reason)
    states = []

    async def publish(leaf, payload, retain):
        states.append(decode_cache_state(payload))
        return True

    sync.publish = publish
    return c, sync, states, refused


def _send(sync, update, start=0, version=2, pieces=None):
    """The platform's burst from `start` (its first `pieces` only, when given); True when a
    piece raised MemoryError."""
    lost = False
    end = len(update) if pieces is None else start + pieces * STEP
    for off in range(start, end, STEP):
        try:
            asyncio.run(sync.on_message(encode_cache_chunk(version, len(update), off, update[off:off + STEP],
                                                           KEY)))
        except MemoryError:
            lost = True
    return lost


def _lose_piece(k):
    """The k-th piece's tag (from 1) finds no heap; the platform goes on from the state."""
    c, sync, states, refused = _door()
    update = snap(2, [card(i) for i in range(1, 120)])
    pieces = (len(update) + STEP - 1) // STEP
    assert pieces > 4
    k = pieces if k is None else k
    real_tag = cs.cache_chunk_tag
    calls = [0]

    def starved_tag(*args):
        calls[0] += 1
        if calls[0] == k:
            raise MemoryError("memory allocation failed, allocating 96 bytes")
        return real_tag(*args)

    cs.cache_chunk_tag = starved_tag
    try:
        assert _send(sync, update)
    finally:
        cs.cache_chunk_tag = real_tag
    # One answer, at the lost piece: the rest of that burst is dropped unanswered.
    assert len(states) == 1, states
    assert states[0]["version"] == 1 and states[0]["receiving"] == 2
    assert states[0]["have"] == (k - 1) * STEP
    assert ("out_of_order" in refused) == (k < pieces) and c.version == 1
    assert not _send(sync, update, states[0]["have"])  # the platform goes on from there
    assert c.version == 2 and states[-1]["version"] == 2 and states[-1]["receiving"] == 0
    assert c.decide(ref(119), 0, NOON)[0]
    c.close()


def test_the_last_piece_lost_to_memory_is_answered_with_the_state_and_sent_again():
    _lose_piece(None)  # nothing after it would have made the state go out


def test_a_piece_lost_mid_burst_is_answered_once():
    _lose_piece(3)


def test_an_install_lost_to_memory_starts_the_transfer_again():
    c, sync, states, _refused = _door()
    update = snap(2, [card(i) for i in range(1, 40)])
    real_apply = c.apply
    starve = [True]

    def starved_apply(path, tick=None):
        if starve[0]:  # before the cache read the file: it is left where it was written
            starve[0] = False
            raise MemoryError("memory allocation failed, allocating 96 bytes")
        return real_apply(path, tick)

    c.apply = starved_apply
    assert _send(sync, update)
    assert len(states) == 1 and states[0]["version"] == 1 and states[0]["receiving"] == 0, states
    assert sync._file is None
    try:
        open(c.incoming_path()).close()
    except OSError:
        pass
    else:
        raise AssertionError("the file of an install that failed was left")
    assert not _send(sync, update, 0)  # the platform's resume: from 0, as receiving says
    assert c.version == 2 and states[-1]["version"] == 2
    assert c.decide(ref(39), 0, NOON)[0]
    c.close()


def test_an_answer_that_cannot_be_made_either_raises_for_the_uplink_to_count():
    c, sync, states, _refused = _door()
    update = snap(2, [card(1), card(2)])

    def starved_apply(path, tick=None):
        raise MemoryError("memory allocation failed, allocating 96 bytes")

    async def no_heap(leaf, payload, retain):
        raise MemoryError("memory allocation failed, allocating 124 bytes")

    c.apply = starved_apply
    sync.publish = no_heap
    assert _send(sync, update)
    assert sync.receiving == 0 and c.version == 1 and not states
    c.close()


def test_a_transfer_started_again_that_finds_no_heap_after_the_offer_answers_from_0():
    # The offer removed the file under way: answering with its `have` would have the platform
    # go on from there into a new, headless file (refused malformed at the install).
    c, sync, states, _refused = _door()
    update = snap(2, [card(i) for i in range(1, 120)])
    _send(sync, update, pieces=3)
    assert sync.have == 3 * STEP
    real_offer = c.check_offer

    def offer_then_starved(hdr, total, tick=None):
        real_offer(hdr, total, tick)
        raise MemoryError("memory allocation failed, allocating 48 bytes")

    c.check_offer = offer_then_starved
    _send(sync, update, pieces=1)  # piece 0 again, lost after the offer
    c.check_offer = real_offer
    assert states[-1]["receiving"] == 0 and states[-1]["have"] == 0, states[-1]
    assert not _send(sync, update, 0)
    assert c.version == 2 and states[-1]["version"] == 2 and "reason" not in states[-1]
    c.close()


def test_a_piece_lost_after_a_refusal_is_not_answered_with_the_old_reason():
    c, sync, states, _refused = _door()
    forged = cache_build.build(b"x" * 32, fmt.KIND_SNAPSHOT, 2, 0, SITE, 0xFFFF, 0, [card(3)], {}, [])
    _send(sync, forged)
    assert states[-1]["reason"] == "bad_tag"
    real_tag = cs.cache_chunk_tag

    def starved_tag(*args):
        raise MemoryError("memory allocation failed, allocating 96 bytes")

    cs.cache_chunk_tag = starved_tag
    try:
        update = snap(2, [card(1), card(2)])
        _send(sync, update, pieces=1)  # the new file's first piece is lost
    finally:
        cs.cache_chunk_tag = real_tag
    assert "reason" not in states[-1], states[-1]  # the platform sends again, not gives up
    assert not _send(sync, update, 0) and c.version == 2
    c.close()


def test_a_piece_lost_in_its_decoding_is_answered_once_a_burst():
    c, sync, states, _refused = _door()
    update = snap(2, [card(i) for i in range(1, 120)])
    real_decode = cs.decode_cache_chunk
    calls = [0]

    def starved_decode(payload):
        calls[0] += 1
        if calls[0] in (3, 5):
            raise MemoryError("memory allocation failed, allocating 32 bytes")
        return real_decode(payload)

    cs.decode_cache_chunk = starved_decode
    try:
        assert _send(sync, update)
    finally:
        cs.decode_cache_chunk = real_decode
    assert len(states) == 1 and states[0]["have"] == 2 * STEP, states
    assert not _send(sync, update, 2 * STEP) and c.version == 2
    c.close()


def test_a_file_in_whose_record_found_no_heap_reports_no_stale_content_hash():
    from offline_cache import content

    class Starved:
        def record(self, code, arg=0, payload=b""):
            raise MemoryError("memory allocation failed, allocating 64 bytes")

    c, sync, states, _refused = _door()
    sync.content = content.Tracker(c)
    sync.content.update()
    old = sync.content.value
    assert old
    sync.recorder = Starved()
    update = snap(2, [card(1), card(2)])
    assert _send(sync, update)
    assert c.version == 2 and states[-1]["version"] == 2
    assert "hash" not in states[-1] and sync.content.value is None  # made again at idle
    c.close()
