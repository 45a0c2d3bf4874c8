"""Whitelist updates from the platform over MQTT (docs/protocol.md, "Whitelist updates").

The platform sends a signed snapshot or delta file in chunks; the door writes them in order
to the cache's incoming file, and when the last one is in, the cache verifies and installs it
(offline_cache.cache.Cache.apply: tag, site, version, base; atomic). The door then publishes
the version it holds (`cache_state`, retained), so the platform knows where each door stands
and what to resend. A chunk out of order is not written: the state says how much is in, and
the platform continues from there.

Every piece carries a tag with the site's cache key (protocol.cache_chunk_tag), so nothing is
written that the platform did not send: the first piece's file header (site, version, base,
length) is checked before a byte goes to flash, a file that cannot fit the free flash is
refused then, and a transfer stops at the first piece whose tag is wrong. The file's own tag
is still checked whole before it is installed.
"""

import struct

from crypto import ct
from firmware import events, protocol
from firmware.log import log

# cache_rejected event arg (docs/protocol.md)
REJECT_CODES = {"bad_tag": 1, "stale_version": 2, "base_mismatch": 3, "malformed": 4,
                "wrong_site": 5, "storage": 6, "bad_chunk": 7, "no_cache_key": 8, "no_room": 9}


class CacheSync:
    def __init__(self, cache, recorder=None, status=None, publish=None, tick=None):
        self.cache = cache
        self.tick = tick  # called during a long verification: the door keeps being served
        self.recorder = recorder
        self.status = status if status is not None else {}
        self.publish = publish  # async callable(leaf, payload, retain) -> bool (Uplink.publish)
        self.receiving = 0  # version being received (0: none)
        self.total = 0
        self.have = 0
        self.reason = ""
        self.applied = 0
        self.on_refused = None  # callable(reason, where): junk counted (firmware/refusals.py)
        self.content = None  # offline_cache.content.Tracker: the content hash, reported too

    def state(self):
        version = self.cache.version if self.cache is not None else 0
        content = self.content.value if self.content is not None else None
        return protocol.encode_cache_state(version, self.receiving, self.have, self.reason, content)

    async def publish_state(self):
        if self.publish is not None:
            await self.publish("cache_state", self.state(), True)

    def _reject(self, reason):
        self.reason = reason
        self.receiving = self.total = self.have = 0
        log("cache: update refused:", reason)
        if self.recorder is not None:
            self.recorder.record(events.CACHE_REJECTED, REJECT_CODES.get(reason, 99))

    def chunk(self, payload):
        """Take one update message. Returns True when the state changed in a way the
        platform must hear about (a file installed or refused, or a chunk out of order)."""
        try:
            version, total, offset, tag, data = protocol.decode_cache_chunk(payload)
        except protocol.ProtocolError as e:
            self._refused(e.reason)  # junk: counted, not journaled, the transfer goes on
            return False
        if self.cache is None:
            self._reject("no_cache_key")
            return True
        want = protocol.cache_chunk_tag(self.cache.key, version, total, offset, data)
        if not ct.equal(want, tag):
            # Not the platform's: nothing of it is written, and a transfer it was meant to
            # continue stops here (the platform starts it again from the state).
            self._refused("bad_mac")
            if self.receiving and (version, offset) == (self.receiving, self.have):
                self._reject("bad_chunk")
                return True
            return False
        path = self.cache.incoming_path()
        if offset == 0:
            from offline_cache.fmt import HDR_SIZE, CacheError

            try:
                if len(data) < min(total, HDR_SIZE):
                    raise CacheError("bad_chunk")
                hdr = self.cache.check_offer(data[:HDR_SIZE], total)
                if hdr.version != version:
                    raise CacheError("bad_chunk")
            except CacheError as e:
                self._reject(e.reason)
                return True
            self.receiving, self.total, self.have, self.reason = version, total, 0, ""
        elif (version, total, offset) != (self.receiving, self.total, self.have):
            return True  # not the next piece: the state tells the platform where to go on
        try:
            with open(path, "wb" if offset == 0 else "ab") as f:
                f.write(data)
        except OSError:
            self._reject("storage")
            return True
        self.have += len(data)
        if self.have < self.total:
            return False
        return self._install(path)

    def _refused(self, reason):
        if self.on_refused is not None:
            self.on_refused(reason, "cache")

    def _install(self, path):
        from offline_cache.fmt import CacheError

        try:
            version = self.cache.apply(path, self.tick)
        except CacheError as e:
            self._reject(e.reason)
            return True
        self.receiving = self.total = self.have = 0
        self.reason = ""
        self.applied += 1
        self.status["cache_version"] = version
        if self.content is not None:
            self.status["cache_hash"] = self.content.update()
        if self.recorder is not None:
            self.recorder.record(events.CACHE_UPDATED, 0, struct.pack("<I", version))
        return True

    async def on_message(self, payload):
        if self.chunk(payload):
            await self.publish_state()
