# mpy-heapsize: 64K
# The cache's verification lets the door be served while it runs (both interpreters).
from offline_cache import fmt
from host_tools import cache_build
from offline_cache.cache import Cache
from tests.scratch import fresh_dir

KEY = b"t" * 32
SITE = 7
DAY = 20000
NOON = DAY * 86400 + 12 * 3600


def _dir():
    return fresh_dir("cache-tick")


def ref(i):
    return b"\x00" * 4 + bytes([(i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255])


def write_snap(path, version, n):
    """Streamed to the file: the records are never all in memory (as on the door)."""
    recs = (cache_build.pack_record(ref(i), fmt.ACTIVE, False, 0, DAY - 10, DAY + 10, 1) for i in range(n))
    with open(path, "wb") as f:
        cache_build.write(f, KEY, fmt.KIND_SNAPSHOT, version, 0, SITE, 0xFFFF, 0, n, recs, {}, [])


def test_a_long_verification_lets_the_caller_serve_the_door_in_between():
    calls = []
    c = Cache(_dir(), KEY, SITE)
    write_snap(c.incoming_path(), 1, 10)
    assert c.apply(c.incoming_path()) == 1
    write_snap(c.incoming_path(), 3, 200)
    assert c.apply(c.incoming_path(), lambda: calls.append(1)) == 3
    assert len(calls) == 7  # once per piece of (up to) 32 records read
    assert c.decide(ref(150), 0, NOON)[0] is True


def test_a_merge_at_idle_also_lets_the_door_be_served():
    calls = []
    c = Cache(_dir(), KEY, SITE)
    write_snap(c.incoming_path(), 1, 100)
    c.apply(c.incoming_path())
    recs = (cache_build.pack_record(ref(i), fmt.LOST, False, 0, DAY - 10, DAY + 10, 1) for i in range(40))
    with open(c.incoming_path(), "wb") as f:
        cache_build.write(f, KEY, fmt.KIND_DELTA, 2, 1, SITE, 0xFFFF, 0, 40, recs, {}, [])
    assert c.apply(c.incoming_path()) == 2
    assert c.maintain(0, lambda: calls.append(1)) is True
    assert len(calls) == 100 // 10 + 4  # once per 10 records written, then per 32 read again
    assert c.decide(ref(5), 0, NOON)[1] == "lost" and c.decide(ref(50), 0, NOON)[0] is True
