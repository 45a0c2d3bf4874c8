"""Whitelist updates from the platform over MQTT (docs/protocol.md, "Whitelist updates").

The platform sends a signed snapshot or delta file in chunks; the door writes them in order
to the cache's incoming file, and when the last one is in, the cache verifies and installs it
(offline_cache.cache.Cache.apply: tag, site, version, base; atomic). The door then publishes
the version it holds (`cache_state`, retained), so the platform knows where each door stands
and what to resend. A chunk out of order is not written: the state says how much is in, and
the platform continues from there.

Every piece carries a tag with the site's cache key (wire.common.cache_chunk_tag), so nothing is
written that the platform did not send: the first piece's file header (site, version, base,
length) is checked before a byte goes to flash, a file that cannot fit the free flash is
refused then, and a transfer stops at the first piece whose tag is wrong. The file's own tag
is still checked whole before it is installed.

The platform sends a file's pieces in one burst. When one piece is refused or missing, the
state answers that piece only: the later pieces of the same burst cannot be taken either, and
are dropped and counted (`out_of_order`), not each answered with a state. These answers go out
from the MQTT reader, past the client's in-flight limit, so one per piece would be a flood the
size of the file. A burst sent again from the state (a lower offset, or another version) is
answered again, so the platform's resume and resync still get their answer.
"""

import asyncio
import gc
import struct

from crypto import ct
from firmware import gcpace
from firmware.log import log
from wire import codes as events
from wire.common import ProtocolError, cache_chunk_tag
from wire.door import decode_cache_chunk, encode_cache_state

# cache_rejected event arg (docs/protocol.md): a reason's place here counted from 1, 99 for any
# other. A tuple of constants is frozen into the image; a dict would be built in the heap.
REJECT_REASONS = ("bad_tag", "stale_version", "base_mismatch", "malformed", "wrong_site",
                  "storage", "bad_chunk", "no_cache_key", "no_room")


def reject_code(reason):
    """The cache_rejected event's arg for a refusal reason."""
    return REJECT_REASONS.index(reason) + 1 if reason in REJECT_REASONS else 99


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
        self._answered = None  # (version, offset): the last piece not taken, state published
        self.dropped = 0  # pieces dropped unanswered after a piece of their burst was not taken
        # The incoming file, open from a transfer's first piece to its install or refusal: one
        # littlefs file object (252 bytes on the image) per transfer, not one per piece, asked
        # of a heap the events being drained meanwhile keep busy (a piece failed on it at 68
        # KiB). Nothing is synced per piece: after a power cut a transfer starts again at 0.
        self._file = None
        # The piece being taken (version, offset), known from its decoding on: a piece lost to
        # a MemoryError is answered as one not taken (on_message).
        self._piece_version = self._piece_offset = 0
        self._rejects = 0  # refusals so far: tells one made by the piece being taken

    def state(self):
        version = self.cache.version if self.cache is not None else 0
        content = self.content.value if self.content is not None else None
        return encode_cache_state(version, self.receiving, self.have, self.reason, content)

    async def publish_state(self):
        if self.publish is not None:
            await self.publish("cache_state", self.state(), True)

    def _close_incoming(self):
        """False when the file could not be written out whole (closing writes its last data)."""
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                return False
        return True

    def _reject(self, reason):
        self._rejects += 1
        self._close_incoming()
        self.reason = reason
        self.receiving = self.total = self.have = 0
        log("cache: update refused:", reason)
        if self.recorder is not None:
            self.recorder.record(events.CACHE_REJECTED, reject_code(reason))

    def chunk(self, payload):
        """Take one update message. Returns True when the state changed in a way the
        platform must hear about (a file installed or refused, or the first piece of a burst
        out of order)."""
        if payload is not None and len(payload) >= 16:
            # Read before decoding, which allocates: a piece lost there is still known (by
            # indexing: small ints, nothing from the heap).
            p = payload
            self._piece_version = (p[4] << 24) | (p[5] << 16) | (p[6] << 8) | p[7]
            self._piece_offset = (p[12] << 24) | (p[13] << 16) | (p[14] << 8) | p[15]
        try:
            version, total, offset, tag, data = decode_cache_chunk(payload)
        except ProtocolError as e:
            self._refused(e.reason)  # junk: counted, not journaled, the transfer goes on
            return False
        if self.cache is None:
            if not self._first_of_burst(version, offset):
                return False
            self._reject("no_cache_key")
            return True
        want = cache_chunk_tag(self.cache.key, version, total, offset, data)
        if not ct.equal(want, tag):
            # Not the platform's: nothing of it is written, and a transfer it was meant to
            # continue stops here (the platform starts it again from the state).
            self._refused("bad_mac")
            if self.receiving and (version, offset) == (self.receiving, self.have):
                self._answered = (version, offset)
                self._reject("bad_chunk")
                return True
            return False
        path = self.cache.incoming_path()
        if offset == 0:
            from offline_cache.fmt import HDR_SIZE, CacheError

            # Closed before the offer is judged: the offer removes the old file, and an open
            # one keeps its flash blocks in use (a transfer started again was refused no_room).
            # The transfer under way is forgotten first: a MemoryError from here on must not
            # answer with its `have`, whose bytes the offer has just removed.
            self._close_incoming()
            self.receiving = self.total = self.have = 0

            try:
                if len(data) < min(total, HDR_SIZE):
                    raise CacheError("bad_chunk")
                hdr = self.cache.check_offer(data[:HDR_SIZE], total, self.tick)
                if hdr.version != version:
                    raise CacheError("bad_chunk")
            except CacheError as e:
                self._answered = (version, offset)
                self._reject(e.reason)
                return True
            self.receiving, self.total, self.have, self.reason = version, total, 0, ""
        elif (version, total, offset) != (self.receiving, self.total, self.have):
            # Not the next piece: the state tells the platform where to go on, once a burst.
            return self._first_of_burst(version, offset)
        try:
            f = self._file
            if offset == 0 or f is None:  # a new transfer, or one whose file could not be opened
                self._close_incoming()
                f = self._file = open(path, "wb" if offset == 0 else "ab")
            if f.write(data) != len(data):
                raise OSError(28)  # ENOSPC: the piece did not go in whole
        except OSError:
            self._answered = (version, offset)
            self._reject("storage")
            return True
        self.have += len(data)
        self._answered = None  # the transfer moves on: a piece missing later is news again
        if self.have < self.total:
            return False
        return self._install(path)

    def _first_of_burst(self, version, offset):
        """True when this piece, which the door cannot take, is to be answered with the state;
        False (dropped, counted) when it follows one already answered in the same burst: same
        version, a higher offset. A burst sent again starts lower and is answered."""
        if self._answer_again(version, offset):
            return True
        self.dropped += 1
        self._refused("out_of_order")
        return False

    def _answer_again(self, version, offset):
        """Whether a piece not taken is the first of its burst (to be answered), noting it."""
        answered, self._answered = self._answered, (version, offset)
        return not (answered is not None and answered[0] == version and offset > answered[1])

    def _refused(self, reason):
        if self.on_refused is not None:
            self.on_refused(reason, "cache")

    def _install(self, path):
        from offline_cache.fmt import CacheError

        if not self._close_incoming():  # written out whole before the cache reads it
            self._reject("storage")
            return True
        try:
            version = self.cache.apply(path, self.tick)
            if self.content is not None:
                self.content.value = None  # another file from here: made again below, or at idle
        except CacheError as e:
            self._reject(e.reason)
            return True
        self.receiving = self.total = self.have = 0
        self.reason = ""
        self.applied += 1
        self.status["cache_version"] = version
        if self.recorder is not None:
            self.recorder.record(events.CACHE_UPDATED, 0, struct.pack("<I", version))
        if self.content is not None:
            # The file is installed: a hash that finds no heap (or flash) is left unknown, for
            # the idle maintenance to make (firmware/card_task.py maintain_cache), and does
            # not cost the install its record or the platform its answer.
            try:
                self.status["cache_hash"] = self.content.update()
            except (MemoryError, OSError) as e:
                self.status["cache_hash"] = None
                log("cache: content hash failed:", repr(e))
        return True

    async def on_message(self, payload):
        while gcpace.card_first():  # the person at the door first (firmware/gcpace.py)
            await asyncio.sleep_ms(5)
        rejects = self._rejects
        # A piece's tag and write, and the scan and hash of the file it completes, make only
        # garbage (the open file excepted): collected once after it, not every few KiB of it
        # (firmware/gcpace.py).
        gcpace.hold()
        try:
            changed = self.chunk(payload)
        except MemoryError:
            # The piece (its tag, its file) or the install it completed found no heap. The
            # platform sends nothing more until the state answers (it waited for one that never
            # came: "no_answer"), so the state goes out now, as for a piece not taken.
            payload = None
            if self._lost_to_memory():
                if self._rejects == rejects:
                    # Not a refusal: a reason left from an earlier file would read as this
                    # one's, and the platform would give up on it.
                    self.reason = ""
                await self._answer()
            raise  # and the uplink counts the piece (no_memory)
        finally:
            gcpace.release()
        if changed:
            await self._answer()

    def _lost_to_memory(self):
        """The state after a piece lost to a MemoryError: the transfer as it stood, so the
        platform sends again from there. An install that failed starts again from 0: the
        cache has removed the file, or (failing before it read the header) left it, removed
        here. True when the state is to be published: once a burst, as for a piece not taken
        (a later piece of the same burst lost too is not answered again)."""
        gc.collect()
        if self.content is not None and self.cache is not None and \
                self.cache.version != self.status.get("cache_version"):
            self.content.value = None  # a file went in, its hash not made: made at idle
        if self.receiving and self.have >= self.total:
            self._close_incoming()
            try:
                import os

                os.remove(self.cache.incoming_path())
            except OSError:
                pass
            self.receiving = self.total = self.have = 0
            self._answered = (self._piece_version, self._piece_offset)
            return True
        return self._answer_again(self._piece_version, self._piece_offset)

    async def _answer(self):
        """The state, published; one that found no heap (a fresh JSON string and its packet,
        asked of a heap a drain and a transfer keep busy) is tried twice more after a
        collection: the platform waits for this answer and sends nothing more until it comes
        (reference_platform/distribute.py push: "no_answer")."""
        for left in (2, 1, 0):
            try:
                await self.publish_state()
                return
            except MemoryError:
                if not left:
                    raise
                import asyncio
                import gc

                gc.collect()
                await asyncio.sleep(0.05)
