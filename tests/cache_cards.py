# Whitelist cards for the cache tests on every interpreter (CPython, MicroPython, the
# bare-metal board): card i's reference and an active record valid around DAY.
from host_tools import cache_build
from offline_cache import fmt

DAY = 20000
NOON = DAY * 86400 + 12 * 3600


def ref(i):
    return b"\x00" * 4 + bytes([(i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255])


def card(i, status=fmt.ACTIVE):
    return cache_build.pack_record(ref(i), status, False, 0, DAY - 10, DAY + 10, 0x0003)
