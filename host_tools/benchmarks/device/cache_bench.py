# mypy: ignore-errors
# Whitelist cache figures on the MicroPython unix port (run with -X heapsize=64K):
#   micropython cache_bench.py cache DIR    100k snapshot load, lookups, 1k delta, merge, reopen
#   micropython cache_bench.py ram DIR      live heap of the cache code and of an open 100k cache
#   micropython cache_bench.py json DIR     baseline: the whole list as a JSON dict in RAM
#   micropython cache_bench.py files DIR N  baseline: one littlefs file per card (N cards)
# DIR holds snap.bin, delta.bin, probes.bin, cards.json made by host_tools/benchmarks/cache.py.
import array
import gc
import os
import sys
import time

mode, folder = sys.argv[1], sys.argv[2]
KEY = b"bench-cache-key-0123456789abcdef"
SITE = 1
NOW = 20000 * 86400 + 12 * 3600


def fresh(name, blocks):
    from board.vdev.flashsim import FlashSim

    p = folder + "/" + name
    try:
        os.remove(p)
    except OSError:
        pass
    return FlashSim(path=p, block_size=4096, block_count=blocks)


COPY = bytearray(1024)


def copy_in(src, dst):
    """Stream a file onto the flash as the uplink does with a received update."""
    buf = COPY
    with open(src, "rb") as a, open(dst, "wb") as b:
        while True:
            n = a.readinto(buf)
            if not n:
                break
            b.write(buf if n == len(buf) else buf[:n])


def probes(n):
    buf = bytearray(8 * n)
    with open(folder + "/probes.bin", "rb") as f:
        f.readinto(buf)
    return buf


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


if mode == "cache":
    import vfs

    from board.vdev.flashsim import mount
    from offline_cache.cache import Cache

    pf = open(folder + "/probes.bin", "rb")  # read one probe at a time: the heap is the cache's
    first = pf.read(8)
    times = array.array("I", bytes(4000))  # allocated before littlefs and the cache fill the heap
    dev = fresh("cache.img", 1024)  # 4 MiB: the sorted file, an incoming snapshot, the overlay
    vfs.VfsLfs2.mkfs(dev)
    mount(dev, "/fl")
    os.mkdir("/fl/wl")
    c = Cache("/fl/wl", KEY, SITE)
    t0 = time.ticks_ms()
    copy_in(folder + "/snap.bin", c.incoming_path())
    t1 = time.ticks_ms()
    c.apply(c.incoming_path())
    t2 = time.ticks_ms()
    print("snapshot_write_s", (t1 - t0) / 1000)
    print("snapshot_verify_s", (t2 - t1) / 1000)
    print("snapshot_load_s", (t2 - t0) / 1000)
    print("bytes", os.stat("/fl/wl/main.bin")[6])
    print("flash_read_programmed", dev.bytes_read, dev.bytes_programmed)
    gc.collect()
    hits = 0
    r0 = dev.bytes_read
    pf.seek(0)
    for i in range(1000):
        ref = pf.read(8)
        a = time.ticks_us()
        g = c.decide(ref, 0, NOW)
        times[i] = time.ticks_diff(time.ticks_us(), a)
        hits += g[0]
    pf.close()
    n = 1000
    for t in times:
        print("lookup_us", t)  # the host takes the median (sorting here would need 8 KiB)
    print("lookup_flash_bytes", (dev.bytes_read - r0) / n)
    print("lookup_hits", hits, n)
    t0 = time.ticks_ms()
    copy_in(folder + "/delta.bin", c.incoming_path())
    c.apply(c.incoming_path())
    t1 = time.ticks_ms()
    print("delta_apply_s", (t1 - t0) / 1000)
    print("revoked_after_delta", c.decide(first, 0, NOW)[1])
    t0 = time.ticks_ms()
    c.maintain()
    print("merge_s", (time.ticks_ms() - t0) / 1000)
    print("revoked_after_merge", c.decide(first, 0, NOW)[1])
    c.close()
    c = None  # the next boot: the door has only this cache
    t0 = time.ticks_ms()
    c = Cache("/fl/wl", KEY, SITE)
    print("reopen_s", (time.ticks_ms() - t0) / 1000)
    print("revoked_after_reopen", c.decide(first, 0, NOW)[1])
    c.close()
    vfs.umount("/fl")
    print("done")

elif mode == "ram":
    gc.collect()
    a0 = gc.mem_alloc()
    from offline_cache.cache import Cache

    gc.collect()
    a1 = gc.mem_alloc()
    c = Cache(folder + "/wl", KEY, SITE)
    assert c.error is None and c.main.hdr.count > 0
    gc.collect()
    print("ram_code", a1 - a0)
    print("ram_open", gc.mem_alloc() - a1)

elif mode == "json":
    import json

    try:
        with open(folder + "/cards.json") as f:
            cards = json.load(f)
    except MemoryError:
        print("json_memoryerror")
        sys.exit(0)
    gc.collect()
    print("json_heap_kib", gc.mem_alloc() / 1024)
    pr = probes(1000)
    times = []
    for i in range(0, len(pr), 8):
        k = "%016x" % int.from_bytes(pr[i:i + 8], "big")
        a = time.ticks_us()
        cards.get(k)
        times.append(time.ticks_diff(time.ticks_us(), a))
    print("json_lookup_ms", median(times) / 1000)

elif mode == "files":
    import vfs

    from board.vdev.flashsim import mount

    n = int(sys.argv[3])
    dev = fresh("files.img", 1024)
    vfs.VfsLfs2.mkfs(dev)
    mount(dev, "/ff")
    os.mkdir("/ff/c")
    rec = b"\x00" * 7
    pr = probes(n)
    free0 = os.statvfs("/ff")[3]
    t0 = time.ticks_ms()
    made = 0
    try:
        for i in range(n):
            with open("/ff/c/%016x" % int.from_bytes(pr[8 * i:8 * i + 8], "big"), "wb") as f:
                f.write(rec)
            made += 1
    except OSError:
        pass
    print("files_made", made, (time.ticks_ms() - t0) / 1000)
    print("files_blocks_used", free0 - os.statvfs("/ff")[3])
    times = []
    for i in range(0, min(made, 400)):
        a = time.ticks_us()
        with open("/ff/c/%016x" % int.from_bytes(pr[8 * i:8 * i + 8], "big"), "rb") as f:
            f.read()
        times.append(time.ticks_diff(time.ticks_us(), a))
    print("files_lookup_ms", median(times) / 1000)
    vfs.umount("/ff")
