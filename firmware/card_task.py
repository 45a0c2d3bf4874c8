"""The card flow at the door: reader poll -> card session -> whitelist decision -> door.

One decision per presentation (card_reader/presentation.py): a card left on the reader is decided
once, and again only after the reader has *seen* the field empty for `absent_ms`. Time alone is
no evidence: an event loop held up (a whitelist's content hash, a merge, a TLS handshake: seconds
on an ESP32) leaves a held card unread that long, and it is still the same presentation.
Nothing here waits for the network: the decision uses the offline cache and the door
journals the result itself (docs/card-profile.md, "door flow").
"""

import asyncio

from wire import codes as ev
from wire.common import FLAG_LOW_ASSURANCE, FLAG_REKEYED
from firmware import gcpace
from firmware.clock_trust import trusted_time
from firmware.log import log
from card_reader.presentation import TIMING, same_presentation
from ticks import ticks_diff, ticks_us


NO_KEYS = ev.deny_code("no_keys")
NO_CACHE = ev.deny_code("no_cache")

# The card options (config.json "cards" overrides these and the poll timing, card_reader.presentation).
POLICY = {
    "legacy_uid": False,  # accept UID-only cards (low assurance)
    "legacy_classic": False,  # accept MIFARE Classic sector reads (low assurance)
    "classic_block": 4,
}
# Reads that all find no heap for this long, this many of them, stop the firmware, and the
# board restarts it (board/esp32_ref.py): a door whose every read fails decides no card and
# says nothing. The count keeps two MemoryErrors hours apart (a reader unplugged in between)
# from looking like a minute of them.
STARVED_STOP_MS = 60000
STARVED_STOP_READS = 20


def decide(result, cache, door_no, now, mode):
    """(granted, deny_reason, master, flags) for a card step result.

    Refusals from the card step (clone, wrong key, bad MAC...) and from the whitelist get
    one reason code each (wire/codes.py DENY_REASONS, deny_code); revocations win over everything, master
    cards included (the cache's rule); lockdown admits master cards only."""
    flags = FLAG_LOW_ASSURANCE if result.low_assurance else 0
    if getattr(result, "rekeyed", False):
        flags |= FLAG_REKEYED
    if not result.ok:
        return False, ev.deny_for_card(result.code), False, flags
    if cache is None:
        return False, NO_CACHE, False, flags
    granted, reason, master = cache.decide(result.ref, door_no, now,
                                           "lockdown" if mode == "lockdown" else "normal")
    if granted:
        return True, 0, master, flags
    return False, ev.deny_code(reason), master, flags


class CardTask:
    """Polls the PN532 on `board.reader_uart` and hands each decision to the door task."""

    def __init__(self, board, door, keystore, cache, door_no, cfg=None, status=None):
        c = dict(TIMING)
        c.update(POLICY)
        c["starved_stop_ms"] = STARVED_STOP_MS
        if cfg:
            c.update(cfg)
        # A wait that found the card counts as the field empty up to then (_looked_empty): one
        # held up by the event loop with the card there all along must stay below absent_ms, or
        # a held card would be decided again. Longer waits are cut to that.
        c["wait_ms"] = max(0, min(c["wait_ms"], c["absent_ms"] - c["poll_ms"] - 1))
        self.cfg = c
        self.board = board
        self.clock = board.clock
        self.door = door
        self.keystore = keystore
        self.cache = cache
        self.door_no = door_no
        # Imported here: the decision above needs neither the reader driver nor the crypto.
        from card_reader.card_session import CardSession
        from card_reader.pn532 import AsyncPN532

        self.reader = AsyncPN532(board.reader_uart) if board.reader_uart is not None else None
        self.session = None
        if keystore is not None:
            self.session = CardSession(keystore, c["legacy_uid"], c["legacy_classic"],
                                       c["classic_block"])
        self.status = status if status is not None else {}
        self.reader_ready = False
        self.present = None  # UID of the presentation already decided (or being retried)
        self._empty_from = None  # ticks: the start of the reads that found the field empty
        self._empty_to = 0  # since a card was last seen, and the end of the last of them
        self._waited = False  # the last step spent its time waiting for a card: no pause
        self.decisions = 0
        self.status["decisions"] = 0  # there from the start: counting a decision allocates nothing
        self.card_lost = 0  # card steps cut short by the card leaving
        self.out_of_memory = 0  # card steps cut short by a MemoryError
        self.status["card_out_of_memory"] = 0  # as decisions: counting one allocates nothing
        self._starved = None  # ticks of the first of the MemoryErrors in a row, if any
        self._starved_reads = 0  # and how many
        self._lost = None  # (uid, ticks) of the last card_lost journaled
        self.hold = False  # True: the reader is lent to someone else (self-test, console);
        # the task ends its pending wait within wait_ms, then says "held" (status reader)

    def _looked_empty(self, began, now, found):
        """Count the read from `began` to `now` as the field seen empty, when it is evidence;
        True once the field has been seen empty for `absent_ms` in a row.

        A read that found nothing is. A wait that found a card is, up to the moment it found
        it (the chip looked all along), but only when it ended within its own time: one that
        ended later was held up by the event loop, and the card may have been there from its
        start. wait_ms + poll_ms stays below absent_ms (__init__), so a held card is never
        taken for gone. A poll that found a card is not (it looked once, at its end). Reads
        count in a row only: a gap longer than two polls between two of them (the loop held
        up between polls) starts the count again, as does every step that read nothing (a
        reader error, no heap, two cards: `step`; the reader lent: `run`)."""
        cfg = self.cfg
        if found and not (cfg["wait_ms"] and
                          self.clock.ticks_diff(now, began) <= cfg["wait_ms"] + cfg["poll_ms"]):
            return False
        if self._empty_from is not None and \
                self.clock.ticks_diff(began, self._empty_to) > 2 * cfg["poll_ms"]:
            self._empty_from = None
        if self._empty_from is None:
            self._empty_from = began
        self._empty_to = now
        return self.present is not None and \
            self.clock.ticks_diff(self._empty_to, self._empty_from) >= self.cfg["absent_ms"]

    def _set_reader(self, state):
        self.status["reader"] = state

    async def step(self):
        """One poll. Returns True when a card was decided."""
        from card_reader.pn532 import E_TWO_CARDS, RETRY_FOREVER, PN532Error

        self._waited = False
        # Taken until this step has read the field: one that ends without a read (an error, no
        # heap, two cards, no reader) leaves the count of empty reads started again.
        span, self._empty_from = self._empty_from, None
        wait_ms = self.cfg["wait_ms"]
        uart = self.reader.uart
        connected = getattr(uart, "connected", None)
        if connected is not None and not connected():
            self.reader_ready = False
            self._set_reader("absent")
            return False
        if not self.reader_ready:
            fw = await self.reader.begin()
            if wait_ms:
                await self.reader.rf_retries(RETRY_FOREVER)
            self.reader_ready = True
            self._set_reader("pn532 v%d.%d" % (fw[1], fw[2]))
        began = self.clock.ticks_ms()
        try:
            if wait_ms:
                target = await self.reader.wait_target(wait_ms, 2, self.cfg["renew_ms"])
            else:
                target = await self.reader.list_target(self.cfg["list_timeout_ms"])
        except PN532Error as e:
            if e.code == E_TWO_CARDS:
                return False  # two cards in the field: none is read, the user will retry
            raise
        self._empty_from = span  # a read: the count of empty ones goes on (_looked_empty)
        now = self.clock.ticks_ms()
        if self._looked_empty(began, now, target is not None):
            self.present = None  # whatever comes next is a new presentation
        if target is None:
            self._waited = bool(wait_ms)
            return False
        self._empty_from = None
        uid = bytes(target.uid)
        held = self.present
        if held is not None and same_presentation(held, uid):
            self.present = uid
            return False
        t0 = now
        gcpace.hold()  # a card session's allocations are garbage, and it is timed
        gcpace.card_session(True)
        try:
            return await self._decide(uid, target, t0)
        finally:
            gcpace.card_session(False)
            gcpace.release()

    async def _decide(self, uid, target, t0):
        from card_reader.card_session import CARD_LOST

        if self.session is None:
            result = None
        else:
            result = await self.session.read_async(self.reader.exchange, uid, target.sak)
        if result is not None and result.code == CARD_LOST:
            await self._release()
            # Pulled away mid-read: logged (once per card within `lost_quiet_ms`, so a card
            # hovering at the edge of the field cannot flood the journal), read again when
            # it comes back.
            self.card_lost += 1
            now = self.clock.ticks_ms()
            last = self._lost
            if last is None or not same_presentation(last[0], uid) or \
                    self.clock.ticks_diff(now, last[1]) >= self.cfg["lost_quiet_ms"]:
                self.handle(result)
                self._lost = (uid, now)  # once journaled (a MemoryError: at the next loss)
            return False
        self.handle(result)
        # Held as decided only now: a MemoryError before this point leaves it undecided (read
        # again), one after it (the release below) leaves it decided once.
        self.present = uid
        self.status["card_ms"] = self.clock.ticks_diff(self.clock.ticks_ms(), t0)
        await self._release()  # after the decision: the door need not wait for the DESELECT
        return True

    async def _release(self):
        from card_reader.pn532 import PN532Error

        try:
            await self.reader.release()
        except PN532Error:
            pass

    def handle(self, result):
        """Decide and act on one card step result (None: the door has no keys)."""
        if result is None:
            self.door.deny(NO_KEYS, b"", 0)
            self._decided()
            return
        # Validity and schedules need a clock the door could verify: with none, the time is
        # unknown and the offline policy applies (docs/door.md, "Clock and cards").
        now = trusted_time(self.clock)
        t0 = ticks_us()
        granted, reason, master, flags = decide(result, self.cache, self.door_no, now,
                                                self.door.mode())
        # the cache lookup's share of a decision (bench: card.field_step_*)
        self.status["lookup_us"] = ticks_diff(ticks_us(), t0)
        ref = result.ref or b""
        if granted:
            self.door.grant("card", master, ref, flags)
        else:
            self.door.deny(reason, ref, flags)
        if result.code != ev.CARD_LOST:  # journaled as a refusal, but a read cut short
            self._decided()

    def _decided(self):
        """Counted once the door has acted (a MemoryError there raises past this: nothing
        decided, the card read again). The count is in the status: a host that swaps cards as
        fast as the door decides (the soak) tells a decision from a read cut short by it. A
        read cut short (card_lost) is not counted, though journaled: the card is read again,
        and counted, its release taken for a decision made the soak present the next card to
        a door still holding the one before as decided (it stopped at 49,733 at 72 KiB)."""
        self.decisions += 1
        self.status["decisions"] = self.decisions

    async def run(self):
        from card_reader.pn532 import PN532Error

        while True:
            if self.hold:
                if self.reader_ready:  # end a wait still pending before lending the reader
                    try:
                        await self.reader.abort()
                    except PN532Error:
                        pass
                self.reader_ready = False  # whoever had it may have reconfigured it
                self._starved = None  # not reading is not failing to read
                self._empty_from = None  # nor evidence of an empty field
                self._set_reader("held")
                await asyncio.sleep_ms(100)
                continue
            try:
                await self.step()
                self._starved = None
            except PN532Error as e:  # (the starvation count goes on: restarting is no read)
                # The reader stopped answering or talks nonsense: start it again, slowly.
                if self.reader_ready:
                    _say("reader:", e, False)
                self.reader_ready = False
                try:
                    self._set_reader("error " + str(e))
                except MemoryError:  # the reason needs heap; that there is one does not
                    self._set_reader("error")
                self._waited = False
                await asyncio.sleep_ms(1000)
            except MemoryError:
                # No heap for this read (a fragmented heap, a whitelist update under way):
                # it costs this read, not the door (an exception out of here stops every task).
                # A card not decided yet is read again, after the reader is started again (it
                # may have been left mid-exchange); one already decided is not decided again.
                self.reader_ready = False
                self._waited = False
                self.out_of_memory += 1
                self.status["card_out_of_memory"] = self.out_of_memory
                now = self.clock.ticks_ms()
                if self._starved is None:
                    self._starved = now
                    self._starved_reads = 0
                self._starved_reads += 1
                if self._starved_reads >= STARVED_STOP_READS and \
                        self.clock.ticks_diff(now, self._starved) >= self.cfg["starved_stop_ms"]:
                    # Every read for that long found no heap (a heap too fragmented ever to
                    # hold a session): the last resort, a restart, ends it.
                    try:
                        log("cards: no heap for a read in %d ms: stopping" % self.cfg["starved_stop_ms"])
                    except MemoryError:
                        pass
                    raise
                import gc

                gc.collect()
                try:
                    log("cards: out of memory, reading again")
                except MemoryError:  # not even for the line: out of here it stops every task
                    pass
            if not self._waited:  # after a wait in an empty field, wait again at once
                await asyncio.sleep_ms(self.cfg["poll_ms"])


def _say(what, e, as_repr=True):
    """A log line that finds no heap is dropped: out of a task, its MemoryError (from repr(e),
    the line, the ring) ended the firmware, and after a failure is when the heap is short."""
    try:
        log(what, repr(e) if as_repr else e)
    except MemoryError:
        pass


async def maintain_cache(cache, status, content=None, serve_door=None, every_ms=30000):
    """Merge a grown overlay into the sorted file at a quiet moment (the door is served
    between pieces of the merge), and open again files that could not be opened (the
    cache refuses every card meanwhile). A failure is logged and tried again next time.
    `status` gets the version, and the content hash (`content`: offline_cache.content's
    Tracker) after a merge or a reopening."""
    hash_due = False  # a new main.bin whose content hash is not in the status yet
    while True:
        await asyncio.sleep_ms(every_ms)
        merged = False
        was = cache.error
        gcpace.hold()  # a merge and a hash: garbage by the record
        try:
            merged = cache.maintain(256, serve_door)
        except Exception as e:  # noqa: BLE001 - heap, flash, tick: the cache stays consistent
            _say("cache: maintenance failed:", e)
        finally:
            gcpace.release()
        if cache.error != was:
            _say("cache:", cache.error or "open again", False)
        status["cache_version"] = cache.version
        hash_due = hash_due or merged or bool(was and not cache.error)
        if content is not None and content.value is None and cache.main is not None and \
                not cache.error:
            hash_due = True  # an install whose hash found no heap (firmware/cache_sync.py)
        if hash_due and content is not None:
            # Out of the try above it stopped the firmware on a MemoryError (an exception out
            # of a task ends them all); a hash that could not be made is made next round.
            gcpace.hold()
            try:
                status["cache_hash"] = content.update()  # the same, for a new main.bin
                hash_due = False
            except Exception as e:  # noqa: BLE001 - heap, flash
                _say("cache: content hash failed:", e)
            finally:
                gcpace.release()
