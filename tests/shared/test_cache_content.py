# mpy-heapsize: 128K
# The whitelist's content hash on both interpreters (offline_cache/content.py): the door's
# value (main file, overlay, merged or not, recorded or hashed again) equals the host's for
# the same cards, and the door reports it with its version. (128K: the file is compiled from
# source in the heap it tests in, beside the uplink's protocol and whitelist-sync modules.)
import os

from offline_cache import content, fmt
from host_tools import cache_build
from offline_cache.cache import Cache
from host_tools.cache_build import pack_record
from tests.scratch import fresh_dir

KEY = b"k" * 32
SITE = 7
DAY = 20000
SCHED = {1: [(0x1F, 8 * 60, 18 * 60)]}


def _dir():
    return fresh_dir("content-test")


def ref(i):
    return b"\x00" * 4 + bytes([(i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255])


def snap(version, recs, holidays=(DAY + 1,)):
    return cache_build.build(KEY, fmt.KIND_SNAPSHOT, version, 0, SITE, 0xFFFF, 0, recs, SCHED, holidays)


def delta(version, base, recs):
    return cache_build.build(KEY, fmt.KIND_DELTA, version, base, SITE, 0xFFFF, 0, recs, SCHED, [DAY + 1])


def card(i, status=fmt.ACTIVE, groups=0x0003):
    return pack_record(ref(i), status, False, 0, DAY - 10, DAY + 10, groups)


def _cache(data):
    c = Cache(_dir(), KEY, SITE)
    c.apply_bytes(data)
    return c


def _content(c):
    return content.Tracker(c).update()


def test_the_content_hash_is_of_the_cards_not_of_the_file():
    # Computed alike on the host (a snapshot's bytes) and on the door (main file, overlay on
    # top, merged or not): two different "v2" files are told apart, a re-signed merge is not.
    final = [card(1), card(2), card(3, fmt.LOST), card(5), card(9, groups=0x0100)]
    want = content.of_snapshot(snap(2, final))
    first = [card(1), card(2), card(3), card(4), card(5)]
    c = _cache(snap(1, first))
    t = content.Tracker(c)
    assert t.update() == content.of_snapshot(snap(1, first))
    c.apply_bytes(delta(2, 1, [card(3, fmt.LOST), pack_record(ref(4), 0, False, 0, 0, 0, 0, True),
                               card(9, groups=0x0100)]))
    assert c.overlay is not None and t.update() == want
    with open(c._p("main.bin"), "rb") as f:
        before = f.read()
    assert c.maintain() and c.overlay is None and t.update() == want  # the merge re-signs
    with open(c._p("main.bin"), "rb") as f:
        assert f.read() != before
    folder = c.dir
    c.close()
    c = Cache(folder, KEY, SITE)  # a boot: the recorded sum names this main.bin
    assert _content(c) == want
    c.close()
    os.remove(folder + "/digest")
    c = Cache(folder, KEY, SITE)
    assert _content(c) == want  # the records hashed again, and recorded
    c.close()
    with open(folder + "/digest") as f:
        tag, live, total = f.read().split()
    with open(folder + "/digest", "w") as f:
        f.write("00112233aabbccdd %s %d" % (live, int(total) + 1))  # another main.bin's
    c = Cache(folder, KEY, SITE)
    assert _content(c) == want
    c.close()
    # the same version with one card different, and other holidays: other hashes
    other = [card(1), card(2), card(3, fmt.LOST), card(5), card(9, groups=0x0200)]
    c = _cache(snap(2, other))
    assert _content(c) not in (None, want)
    c.close()
    assert content.of_snapshot(snap(2, final, holidays=())) != want
    # deltas on an overlay (merged into a new overlay) keep adding up
    c = _cache(snap(1, [card(1)]))
    t = content.Tracker(c)
    c.apply_bytes(delta(2, 1, [card(2)]))
    assert t.update() == content.of_snapshot(snap(2, [card(1), card(2)]))
    c.apply_bytes(delta(3, 2, [card(1, fmt.CANCELLED), card(3)]))
    assert t.update() == content.of_snapshot(snap(3, [card(1, fmt.CANCELLED), card(2), card(3)]))
    c.close()
    c = Cache(_dir(), KEY, SITE)  # no whitelist: no hash
    assert _content(c) is None
    c.close()


def test_the_content_hash_vector():
    # the same value on both interpreters, and at the platform (CardRegistry.content_hash uses
    # content.of_snapshot, checked against the door in tests/host/vdev/test_cache_sync.py)
    c = _cache(snap(1, [card(1), card(2, fmt.LOST)]))
    assert _content(c) == "9411005dbb84e598"
    c.close()
    assert content.of_snapshot(snap(1, [card(1), card(2, fmt.LOST)])) == "9411005dbb84e598"
    assert content.of_snapshot(snap(1, [])) == "b3b070babbedbd4b"


def test_the_door_reports_the_content_hash_of_what_it_installed():
    from wire.platform import decode_cache_state, encode_cache_chunk

    from firmware.cache_sync import CacheSync

    c = _cache(snap(1, [card(1)]))
    sync = CacheSync(c)
    sync.content = content.Tracker(c)
    sync.content.update()
    assert decode_cache_state(sync.state())["hash"] == content.of_snapshot(snap(1, [card(1)]))
    update = snap(2, [card(1), card(2, fmt.LOST)])
    for off in range(0, len(update), 256):
        sync.chunk(encode_cache_chunk(2, len(update), off, update[off:off + 256], KEY))
    state = decode_cache_state(sync.state())
    assert state["version"] == 2 and state["hash"] == content.of_snapshot(update)
    assert sync.status["cache_hash"] == state["hash"]
    c.close()


def test_an_install_whose_content_hash_finds_no_heap_is_still_installed_journaled_and_answered():
    # The file is in once Cache.apply returned: a MemoryError in the hash after it must not
    # undo the rest of the install (its cache_updated record, the state that answers the
    # platform); the hash is left unknown, for the idle maintenance to make.
    from wire.platform import decode_cache_state, encode_cache_chunk

    from firmware.cache_sync import CacheSync
    from wire import codes as events

    class Recorder:
        def __init__(self):
            self.codes = []

        def record(self, code, arg=0, payload=b""):
            self.codes.append(code)

    class Starved(content.Tracker):
        def _main_sum(self, main):
            raise MemoryError("memory allocation failed, allocating 304 bytes")

    c = _cache(snap(1, [card(1)]))
    rec = Recorder()
    sync = CacheSync(c, rec)
    sync.content = Starved(c)
    update = snap(2, [card(1), card(2, fmt.LOST)])
    answered = False
    for off in range(0, len(update), 256):
        answered = sync.chunk(encode_cache_chunk(2, len(update), off, update[off:off + 256], KEY))
    assert answered  # the state goes out (the exception used to end the handler first)
    assert c.version == 2 and rec.codes == [events.CACHE_UPDATED]
    state = decode_cache_state(sync.state())
    assert state["version"] == 2 and "hash" not in state and sync.content.value is None
    assert sync.status["cache_hash"] is None
    c.close()
