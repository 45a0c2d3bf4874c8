# mpy-heapsize: 512K
# The door's idle maintenance task (firmware.card_task.maintain_cache; MicroPython only: it
# sleeps with asyncio.sleep_ms) opens again whitelist files that could not be opened, so a
# door refusing every card for want of heap recovers without a reboot, and it outlives a merge
# stopped by an exception (heap, flash, the door's tick): the next round merges.
import asyncio

import offline_cache.cache as cache_mod
from firmware.card_task import maintain_cache
from offline_cache import fmt
from host_tools import cache_build
from offline_cache.cache import OPEN_FAILED, Cache
from tests.cache_cards import NOON, card, ref
from tests.scratch import fresh_dir

KEY = b"m" * 32
SITE = 7


def _held():
    """main.bin v1 (cards 1..499), overlay v2 revoking card 5."""
    c = Cache(fresh_dir("cache-maintenance"), KEY, SITE, reserve_update=True)
    c.apply_bytes(cache_build.build(KEY, fmt.KIND_SNAPSHOT, 1, 0, SITE, 0xFFFF, 0,
                            [card(i) for i in range(1, 500)], {}, []))
    c.apply_bytes(cache_build.build(KEY, fmt.KIND_DELTA, 2, 1, SITE, 0xFFFF, 0,
                            [card(5, fmt.LOST)], {}, []))
    return c


def _decisions(c):
    return [c.decide(ref(i), 0, NOON)[1] for i in (1, 5, 100, 499, 1100)]


BEFORE = ["granted", "lost", "granted", "granted", "unknown"]


def _run_maintenance(c, tick, ms, content=None):
    status = {}

    async def go():
        task = asyncio.create_task(maintain_cache(c, status, content, tick, 1))
        await asyncio.sleep_ms(ms)
        task.cancel()
        await asyncio.sleep_ms(0)

    asyncio.run(go())
    return status


def test_the_idle_maintenance_opens_again_files_that_could_not_be_opened():
    c = _held()
    c.close()
    real = cache_mod.Table

    class Starved(real):
        def __init__(self, path, *a, **k):
            if path.endswith("overlay.bin"):
                raise MemoryError("overlay index")
            real.__init__(self, path, *a, **k)

    cache_mod.Table = Starved
    try:
        c = Cache(c.dir, KEY, SITE, reserve_update=True)
    finally:
        cache_mod.Table = real
    assert c.error == OPEN_FAILED and c.decide(ref(1), 0, NOON)[1] == "no_cache"
    status = _run_maintenance(c, None, 20)
    assert c.error is None and status["cache_version"] == 2
    assert _decisions(c) == BEFORE


def test_the_idle_maintenance_outlives_a_failed_merge_and_merges_next_time():
    c = _held()
    c.apply_bytes(cache_build.build(KEY, fmt.KIND_DELTA, 3, 2, SITE, 0xFFFF, 0,
                            [card(i, fmt.LOST) for i in range(200, 460)], {}, []))
    calls = [0]

    def tick():  # the door's poll fails once, in the first merge
        calls[0] += 1
        if calls[0] == 1:
            raise MemoryError("from tick")

    status = _run_maintenance(c, tick, 40)
    assert calls[0] > 1 and c.overlay is None and c.version == 3
    assert status["cache_version"] == 3
    assert _decisions(c) == BEFORE and c.decide(ref(300), 0, NOON)[1] == "lost"


def test_the_idle_maintenance_outlives_a_content_hash_without_heap_and_makes_it_next_round():
    c = _held()
    c.apply_bytes(cache_build.build(KEY, fmt.KIND_DELTA, 3, 2, SITE, 0xFFFF, 0,
                            [card(i, fmt.LOST) for i in range(200, 460)], {}, []))

    class Content:
        calls = 0
        value = "hash of v2"

        def update(self):
            Content.calls += 1
            Content.value = None
            if Content.calls == 1:
                raise MemoryError("memory allocation failed, allocating 304 bytes")
            Content.value = "hash of v%d" % c.version
            return Content.value

    status = _run_maintenance(c, None, 40, Content())
    assert c.overlay is None and c.version == 3  # merged, then the hash failed once
    assert Content.calls == 2 and status["cache_hash"] == "hash of v3"


def test_the_idle_maintenance_makes_the_hash_an_install_could_not_make():
    # An install whose content hash found no heap leaves it unknown (firmware/cache_sync.py):
    # the next round makes it, with no merge or reopening to prompt it.
    from offline_cache.content import Tracker

    c = _held()
    tracker = Tracker(c)
    assert tracker.value is None  # as the install left it
    status = _run_maintenance(c, None, 20, tracker)
    assert tracker.value is not None and status["cache_hash"] == tracker.value
    assert c.version == 2 and c.overlay is not None  # nothing merged: the hash alone was due


def test_a_content_hash_without_heap_at_boot_leaves_it_unknown_for_the_maintenance():
    # Out of boot, a MemoryError in the hash (a pass over main.bin when its recorded sum is
    # gone) stopped the whole firmware: the door now starts with the hash unknown, and the
    # maintenance's next round makes it.
    from firmware.main import _hash_at_boot
    from offline_cache.content import Tracker

    c = _held()
    tracker = Tracker(c)
    real = tracker.update

    def starved():
        raise MemoryError("memory allocation failed, allocating 240 bytes")

    tracker.update = starved
    status = {}
    _hash_at_boot(tracker, status)  # does not raise
    assert status == {"cache_hash": None} and tracker.value is None
    tracker.update = real
    status = _run_maintenance(c, None, 20, tracker)
    assert tracker.value is not None and status["cache_hash"] == tracker.value


def test_the_idle_maintenance_outlives_a_log_line_that_finds_no_heap():
    # After a failed merge is when the heap is short: the line saying so (repr, the line, the
    # ring) raised MemoryError out of the task, and an exception out of a task ends them all.
    import firmware.card_task as card_task

    c = _held()
    said = []

    def failing_merge(*a, **k):
        raise MemoryError("merge")

    def no_heap_for_lines(*parts):
        said.append(parts[0])
        raise MemoryError("the line")

    c.maintain = failing_merge
    real_log = card_task.log
    card_task.log = no_heap_for_lines
    try:
        status = {}

        async def go():
            task = asyncio.create_task(maintain_cache(c, status, None, None, 1))
            await asyncio.sleep_ms(30)
            alive = not task.done()
            task.cancel()
            await asyncio.sleep_ms(0)
            return alive

        assert asyncio.run(go()) is True
    finally:
        card_task.log = real_log
    assert said.count("cache: maintenance failed:") >= 2  # it went on to later rounds
