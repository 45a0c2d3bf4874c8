"""Store-and-forward upload of the journal to the platform over MQTT.

Rules that make "every swipe reaches the platform" hold:

- events are published in order, in batches, with QoS 1;
- the journal deletes nothing until the *platform* acknowledges (on `.../ack`) that it has
  durably stored events up to a sequence number — the broker's PUBACK only frees the
  in-flight slot;
- after a reconnect, a reboot, or an acknowledgement that does not come in time, sending
  restarts from the first unacknowledged event (the platform stores idempotently by
  (device, seq), so a resend is harmless);
- an acknowledgement beyond what was sent is clamped: a forged or confused ack cannot delete
  unsent events;
- an acknowledgement frees journal space only when it carries the platform's MAC (the site's
  `command` key, which the broker does not hold) over this device, this boot and its sequence
  number: a broker user cannot make the door erase what the platform never stored. A door
  without a `command` key (not commissioned) has nothing to check it with and takes it as is;
- the platform asks again (`resend`) for events it misses below what the door has already
  had acknowledged (a database restored from a backup, a loss from a full ring): the door
  sends those it still holds and names the rest as `gone`, which the platform records as a
  gap, so its ingest never waits for a hole that cannot be filled.

What comes in is held to the protocol's limits: a payload above its topic's size limit is
dropped unread, a retained message is refused on every topic but the door's `cache`, and a
message that fails in any way (MemoryError included) is refused and counted
(firmware/refusals.py), never the connection. The door trusts a time only when the platform
signed it together with the nonce the door announced on this connection (docs/protocol.md,
"Time sync").
"""

import asyncio
import gc
from binascii import hexlify

from crypto import ct
from journal_format import (FLAGS_MASK, MS_MASK, MS_UNTRUSTED, R_ARG, R_BOOT, R_CODE, R_FLAGS, R_MS, R_SEQ,
                            R_TIME, payload_of)
from wire import common
from wire.door import (
    decode_command,
    decode_resend,
    decode_signed_ack,
    decode_signed_time,
    EVENTS_TAIL,
    encode_events,
    events_close,
    events_open,
    events_put,
    encode_presence,
    encode_reply,
    encode_status,
)
from firmware import gcpace
from firmware.config import broker_tls
from firmware.log import log
from firmware.mqtt import Backoff, MQTTClient, MQTTError, TLSError
from firmware.refusals import Refusals
from ticks import ticks_diff, ticks_ms

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

_NONCE_TTL_MS = const(30000)  # a signed time must answer a nonce announced at most this long ago
_REANNOUNCE_MS = const(20000)  # without a trusted time, a fresh nonce (presence) this often: less
# than _NONCE_TTL_MS, so a platform coming back always finds a nonce it can still answer

_ANNOUNCE_EVERY_MS = const(2000)  # answers to the platform's announce request: at most one per 2 s
_ANNOUNCE_LIMIT = const(16)  # bytes: the request is empty
_EVENTS_HEAD = const(96)  # bytes of an events message besides its events (`gone` included)
_EVENT_BYTES = const(96)  # bytes an event takes at most in it (32-bit numbers, 24 hex digits of data)
# The events buffer holds this many events at their largest (672 bytes, kept for good): half a
# batch of the usual ones at least (a card's decision takes about 60 bytes), so a batch goes
# out in two messages. The batch, not the message, sets how much is in flight (the drain).
_TX_EVENTS = const(6)
_INBOUND = const(("ack", "resend", "time", "cmd", "cache"))  # the leaves a door subscribes to


class TimeBase:
    """Maps this boot's monotonic seconds to UTC once the clock has been set."""

    def __init__(self):
        self.epoch_at = None
        self.mono_at = None
        self.trusted = False

    def set(self, epoch_s, mono_s, trusted=True):
        self.epoch_at = epoch_s
        self.mono_at = mono_s
        self.trusted = trusted

    def correct(self, mono_s):
        if self.epoch_at is None:
            return None
        return self.epoch_at - (self.mono_at - mono_s)


def event_tuple(rec, boot, timebase):
    """Journal record -> protocol event tuple, correcting pre-clock times of this boot."""
    flags = rec[R_FLAGS] & FLAGS_MASK
    t = rec[R_TIME]
    ms = rec[R_MS]
    if ms & MS_UNTRUSTED:
        flags |= common.FLAG_TIME_UNTRUSTED
    ms &= MS_MASK
    if not flags & common.FLAG_TIME_VALID and rec[R_BOOT] == boot:
        fixed = timebase.correct(t)
        if fixed is not None and fixed >= 0:
            t = fixed
            flags |= common.FLAG_TIME_VALID | common.FLAG_TIME_CORRECTED
            if not timebase.trusted:
                flags |= common.FLAG_TIME_UNTRUSTED
    return [rec[R_SEQ], rec[R_CODE], rec[R_BOOT], t, ms, flags, rec[R_ARG],
            _hex(payload_of(rec))]


def _hex(b):
    return hexlify(b).decode()


class Uplink:
    def __init__(self, journal, device_id, boot, firmware_version, broker, timebase=None,
                 batch=16, window=8, ack_timeout_ms=5000, on_command=None, on_time=None,
                 fs_root="/", status=None):
        """`broker`: dict with host, port, user, password, keepalive and, for TLS, `ca` (and
        `cert`, `key`): files under `fs_root` (firmware/tlsconf.py). `status`: a dict the
        connection figures are kept in (firmware.main.status)."""
        self.journal = journal
        self.device_id = device_id
        # The protocol's boot counter is 16 bits, as the journal records it (firmware/events.py):
        # the board's count goes on past 65,535, and a batch must still decode and match.
        self.boot = boot & 0xFFFF
        self.firmware_version = firmware_version
        self.broker = broker
        self.timebase = timebase or TimeBase()
        self.batch = batch
        self.window = window  # batches in flight before waiting for platform acks
        self.ack_timeout_ms = ack_timeout_ms
        self.on_command = on_command
        self.on_time = on_time
        self.on_cache = None  # callable(payload) for whitelist update chunks (binary)
        self.on_connected = None  # async callable() once subscribed, e.g. the cache state
        self.client = None
        self.sent_upto = journal.acked
        self._wake = asyncio.Event()
        self.rejected = 0  # inbound messages refused by the codec
        self.last_reject = ""
        self.published_batches = 0
        self.resends = 0
        self.fs_root = fs_root
        self.status = status if status is not None else {}
        self.out_of_memory = 0  # sessions ended by a MemoryError (nothing lost: reconnected)
        self.status["uplink_out_of_memory"] = 0  # there from the start: counting allocates nothing
        self.connect_failures = 0  # connection attempts that failed, TLS ones included
        self.tls_failures = 0
        self.last_error = ""  # why the last attempt failed ("" once connected)
        self.registration = None  # makes the retained `register` message, when sent (firmware/main.py)
        self.keystore = None  # its `command` key checks acks and signed times (firmware/main.py)
        self._resend = None  # (first, last) the platform asked for again, not yet served
        self._announce_asked = False  # the platform asked every door to announce itself again
        self._announced_at = None  # ticks of the last announce answered
        self.resent_records = 0  # records sent again on the platform's request
        self._up = False  # this attempt got a CONNACK
        self.refusals = Refusals(log=log)
        self.recorder = None  # firmware.events.Recorder: the refusals' summary records
        self.trusted_time = False  # a signed time was taken in this boot
        self.utc = None  # callable() -> UTC seconds or None: the door's clock, for the status
        self.dropped_after_connack = 0
        self.nonce = ""  # hex, drawn per connection and sent in the presence message
        # Every inbound payload up to a whitelist piece is read into this one buffer, made
        # here at boot, never per message (firmware/mqtt.py). A larger one (a `keys` command,
        # rare, sent by an operator; a 2 KiB piece from a platform of before) gets a bytearray
        # of its own: 1 KiB less kept for good.
        self._rx = bytearray(common.CACHE_HDR + common.CACHE_CHUNK)
        # And every events batch is written into this one (wire.door.events_put).
        self._tx = bytearray(_EVENTS_HEAD + _EVENT_BYTES * min(batch, _TX_EVENTS))
        self._nonce_at = 0
        self._nonce_used = True
        self._tx_busy = False  # a message is being written from self._tx (_take_tx)

    def kick(self):
        """New events are in the journal: wake the sender."""
        self._wake.set()

    def _t(self, leaf):
        return common.topic(self.device_id, leaf)

    def refuse(self, reason, where=""):
        """Count an inbound message the door will not act on (firmware/refusals.py)."""
        self.refusals.refuse(reason, where)
        self.rejected += 1
        self.last_reject = reason
        self.status["refused"] = self.refusals.by_reason

    def _limit(self, topic):
        """The size limit of a topic of this door (0: a topic the door does not take)."""
        if topic == common.ANNOUNCE_TOPIC:
            return _ANNOUNCE_LIMIT
        try:
            device, leaf = common.split_topic(topic)
        except (common.ProtocolError, UnicodeError):
            return 0
        if device != self.device_id:
            return 0
        return common.limit(leaf)

    def _on_message(self, topic, payload, retained):
        try:
            if topic == common.ANNOUNCE_TOPIC:
                if retained:
                    raise common.ProtocolError("retained")  # stale by definition
                self._announce_asked = True
                self._wake.set()
                return None
            device, leaf = common.split_topic(topic)
            if device != self.device_id:
                raise common.ProtocolError("bad_topic")
            if retained and leaf != "cache":
                # Stale by definition: a retained ack, command or time would be acted on
                # again at every connection (docs/protocol.md, "Retained messages").
                raise common.ProtocolError("retained")
            if leaf == "ack":
                upto = self._verified_ack(payload)
                upto = min(upto, self.sent_upto)
                if self.journal.ack(upto):
                    self._wake.set()
            elif leaf == "resend":
                self._resend = decode_resend(payload)
                self._wake.set()
            elif leaf == "time":
                self._on_time_message(payload)
            elif leaf == "cmd":
                cmd = decode_command(payload)
                if self.on_command is not None:
                    return self.on_command(cmd)
            elif leaf == "cache":
                if self.on_cache is not None:
                    return self.on_cache(payload)
            else:
                raise common.ProtocolError("unexpected_topic", leaf)
        except common.ProtocolError as e:
            self.refuse(e.reason, topic)
        return None

    def _verified_ack(self, payload):
        """The sequence number of an ack the platform made, or ProtocolError (`bad_mac` for a
        missing or wrong tag, `stale_ack` for one made for another boot of this door)."""
        upto, boot, mac = decode_signed_ack(payload)
        ks = self.keystore
        if ks is None or not ks.has("command"):
            return upto
        try:
            tag = bytes.fromhex(mac)
        except (ValueError, TypeError):
            tag = b""
        if len(tag) != 32 or boot is None:
            raise common.ProtocolError("bad_mac")
        good = ks.hmac("command", common.ack_signing_bytes(self.device_id, boot, upto))
        if not ct.equal(good, tag):
            raise common.ProtocolError("bad_mac")
        if boot != self.boot:
            raise common.ProtocolError("stale_ack")
        return upto

    async def _serve_resend(self, client):
        """Send again what the platform asked for below the acknowledged point: the records
        still on the flash, and the range no longer there as `gone` (at most a window's worth
        per request; the platform asks again for the rest). Above the acknowledged point the
        usual resend on ack timeout already covers it."""
        j = self.journal
        first, last = self._resend
        self._resend = None
        last = min(last, j.acked)
        if first > last:
            return
        oldest = j.oldest_seq()
        gone = None
        if first < oldest:  # named whole, however long: one message
            gone = (first, min(last, oldest - 1))
            first = gone[1] + 1
        last = min(last, first + self.batch * self.window - 1)
        while client.connected:
            gc.collect()
            if gone is not None:
                log("uplink: events", gone[0], "to", gone[1], "asked for again are gone")
            n, sent = await self._send_batch(client, first, last, gone)
            gone = None
            self.resent_records += n
            if not n:
                return
            first = sent + 1
    def _batch_payload(self, first, last, gone=None):
        """(payload, n, seq of the last): the events from `first` to `last` (at most a batch),
        each read from the journal and written into the uplink's own buffer before the next is
        read, so one event's objects are alive at a time, not a batch of them (a batch of
        record tuples and event lists took 2-3 KiB at the moment a reconnecting door also
        answers its platform). The payload is a memoryview, valid until the next batch:
        publish has sent it by then. `gone` (the resend's range no longer held) may come
        alone. Only an event the buffer cannot take alone goes out as a string made in the heap."""
        mv = memoryview(self._tx)
        end = len(mv) - EVENTS_TAIL
        p = events_open(mv, self.boot)
        n = seq = 0
        if first <= last:
            for rec in self.journal.records(first, self.batch):
                if rec[R_SEQ] > last:
                    break
                e = event_tuple(rec, self.boot, self.timebase)
                rec = None
                q = events_put(mv, p, e, n, end)
                if q < 0:
                    if n == 0:
                        return encode_events(self.boot, [e], gone), 1, e[0]
                    break
                p = q
                n += 1
                seq = e[0]
                e = None
        return mv[:events_close(mv, p, gone)], n, seq

    def _new_nonce(self):
        import os

        self.nonce = hexlify(os.urandom(common.NONCE_LEN // 2)).decode()
        self._nonce_at = ticks_ms()
        self._nonce_used = False

    def _on_time_message(self, payload):
        """A signed time answering this connection's nonce is trusted; an unsigned one is
        handed on as such (firmware/clock_trust.py decides what it may still do)."""
        t, nonce, mac = decode_signed_time(payload)
        if not mac:
            if self.on_time is not None:
                self.on_time(t, False)
            return
        ks = self.keystore
        if ks is None or not ks.has("command"):
            raise common.ProtocolError("bad_mac", "no command key")
        if self._nonce_used or not ct.equal(nonce.encode(), self.nonce.encode()) \
                or ticks_diff(ticks_ms(), self._nonce_at) > _NONCE_TTL_MS:
            raise common.ProtocolError("bad_nonce")
        try:
            tag = bytes.fromhex(mac)
        except ValueError:
            raise common.ProtocolError("bad_mac")
        want = ks.hmac("command", common.time_signing_bytes(self.device_id, nonce, t))
        if not ct.equal(want, tag):
            raise common.ProtocolError("bad_mac")
        self._nonce_used = True  # single use: a copy of this message is a replay
        if self.on_time is not None and self.on_time(t, True) is not False:
            self.trusted_time = True

    def _summarize(self):
        """At most one `inbound_refused` record per window for what was refused meanwhile."""
        r = self.refusals
        if self.recorder is not None and r.due(ticks_ms(), ticks_diff):
            from wire.codes import INBOUND_REFUSED

            n, data = r.take(ticks_ms())
            self.recorder.record(INBOUND_REFUSED, n, data)

    def link_report(self):
        """What the link is doing, for the door's status report (docs/door.md, "Patrol")."""
        st = self.status
        return {"state": st.get("uplink", "starting"), "refused": self.refusals.by_reason,
                "dropped": self.dropped_after_connack, "failures": self.connect_failures,
                "last_error": st.get("uplink_last_error", ""),
                "retry_at": st.get("uplink_retry_at")}

    async def reply(self, cmd_id, ok, reason=""):
        if self.client is not None and self.client.connected:
            await self.client.publish(self._t("reply"), encode_reply(cmd_id, ok, reason), 1)

    async def publish(self, leaf, payload, retain=False):
        """Publish on one of this device's topics when connected; False otherwise."""
        if self.client is not None and self.client.connected:
            await self.client.publish(self._t(leaf), payload, 1, retain)
            return True
        return False

    async def publish_status(self, report):
        """The report is written into the events buffer, in turn with the events batches: no
        string of its size is asked of the heap (at 66 KiB the patrol's 300-500 bytes were
        free, but not in one piece)."""
        await self._take_tx()
        try:
            client = self.client
            if client is not None and client.connected:
                await client.publish(self._t("status"), encode_status(report, self._tx), 1, True)
                return True
            return False
        finally:
            self._tx_busy = False

    async def _take_tx(self):
        """The events buffer, once no other message is being written from it. Only the sender
        and the patrol take it, never a handler in the connection's read loop: that loop must
        go on reading acknowledgements, which a publish holding the buffer may be waiting for."""
        while self._tx_busy:
            await asyncio.sleep_ms(5)
        self._tx_busy = True

    async def _send_batch(self, client, first, last, gone=None):
        """Publish the events from `first` to `last` that one message holds (and `gone`), from
        the events buffer; (how many went, the seq of the last of them). Nothing is sent
        when there is neither an event nor `gone`."""
        await self._take_tx()
        try:
            payload, n, seq = self._batch_payload(first, last, gone)
            if n or gone is not None:
                await client.publish(self._t("events"), payload, 1)
        finally:
            self._tx_busy = False
        return n, seq

    def _failed(self, why, tls_failure=False):
        self.connect_failures += 1
        if tls_failure:
            self.tls_failures += 1
        self.last_error = why
        st = self.status
        st["uplink"] = "failed"
        st["uplink_error"] = why
        st["uplink_failures"] = self.connect_failures
        st["tls_failures"] = self.tls_failures

    async def _connect(self):
        """A connected MQTTClient, or an exception (TLSError with the reason for TLS)."""
        b = self.broker
        ctx = None
        if broker_tls(b):
            # Imported only by a door that uses TLS (its bytecode is heap on the unix port). The
            # CA/cert/key files are read for this attempt only; mbedTLS keeps its parsed copy.
            from firmware import tlsconf

            gc.collect()
            ctx = tlsconf.client_context(self.fs_root, b)
        else:
            # The connection's objects live as long as it does: made after a collection, they
            # take the lowest holes the heap has, not places past the garbage of the attempt
            # before, where they would hold the door's later work apart.
            gc.collect()
        client = MQTTClient(
            self.device_id, b["host"], b.get("port", 1883), b.get("user"), b.get("password"),
            b.get("keepalive", 30), ctx,
            will=(self._t("presence"), encode_presence(False), 1, True),
            on_message=self._on_message, limit_for=self._limit, on_refused=self.refuse,
            rx_buf=self._rx,
        )
        try:
            await client.connect()
        except MQTTError:
            raise
        except Exception as e:
            if ctx is None:
                raise
            why = tlsconf.failure_reason(e, b["host"], bool(b.get("cert")))
            if why is None:
                raise
            raise TLSError(why)
        return client

    async def _session(self):
        client = await self._connect()
        self._up = True
        self.last_error = ""
        self.status["uplink"] = "connected"
        self.status["uplink_error"] = ""
        self.status["uplink_tls"] = client.ssl is not None
        client.ssl = None  # the socket holds what it needs; the context is not kept here
        self.client = client
        try:
            await client.subscribe(self._t("ack"), 1)
            await client.subscribe(self._t("cmd"), 1)
            await client.subscribe(self._t("time"), 1)
            await client.subscribe(self._t("resend"), 1)
            if self.on_cache is not None:
                await client.subscribe(self._t("cache"), 1)
            await client.subscribe(common.ANNOUNCE_TOPIC, 1)
            self._announce_asked = False
            await self._announce_self(client, fresh_nonce=True)
            log("uplink: connected")
            await self._send_loop(client)
        finally:
            self.client = None
            self.status["uplink"] = "disconnected"
            try:
                await client.close()  # first: what follows allocates, and may find no heap
            except BaseException:
                client.end()  # no heap for close()'s coroutine: ended all the same, at once
                raise
            if client.last_error:
                log("uplink: connection lost:", client.last_error)
                self._note_error(client.last_error)

    async def _announce(self, client):
        """Presence, online, with a fresh nonce the platform signs its time with."""
        self._new_nonce()
        await client.publish(self._t("presence"),
                             encode_presence(True, self.boot, self.firmware_version,
                                                      self.nonce), 1, True)

    def _note_error(self, why):
        self.status["uplink_last_error"] = why

    async def _announce_self(self, client, fresh_nonce=False):
        """Presence, registration and whitelist state: on connecting (with a fresh nonce), and
        when the platform asks (`door/v1/announce`: a broker that keeps retained messages from
        wildcard subscriptions), then with the nonce already announced."""
        self._announced_at = ticks_ms()
        if fresh_nonce:
            await self._announce(client)
        else:
            await client.publish(self._t("presence"),
                                 encode_presence(True, self.boot, self.firmware_version,
                                                          self.nonce), 1, True)
        if self.registration is not None:
            await client.publish(self._t("register"), self.registration(), 1, True)
        if self.on_connected is not None:
            await self.on_connected()

    async def _send_loop(self, client):
        j = self.journal
        self.sent_upto = j.acked  # always resume from the first unacknowledged event
        last_progress = ticks_ms()
        acked_seen = j.acked
        while client.connected:
            if self._resend is not None:
                await self._serve_resend(client)
                continue
            if self._announce_asked \
                    and ticks_diff(ticks_ms(), self._announced_at) >= _ANNOUNCE_EVERY_MS:
                self._announce_asked = False  # a flood of requests costs one answer per interval
                # Without a trusted time the answer carries a fresh nonce: the one announced at
                # connecting may be older than a signed time may answer (the platform was away).
                await self._announce_self(client, fresh_nonce=not self.trusted_time)
                continue
            if j.acked != acked_seen:
                acked_seen = j.acked
                last_progress = ticks_ms()
            if self.sent_upto < j.acked:
                self.sent_upto = j.acked
            pending = j.next_seq - 1 - self.sent_upto
            in_flight = self.sent_upto - j.acked
            # A whitelist piece in its handler, or a card session, has the heap first.
            held = pending > 0 and (client.delivering or gcpace.card_first())
            if pending > 0 and in_flight < self.batch * self.window and not held:
                gc.collect()
                top = j.next_seq - 1  # as it is now: the batch's wait for the buffer may see more
                n, last = await self._send_batch(client, self.sent_upto + 1, top)
                if not n:  # nothing readable up to there (torn slots): nothing to send
                    self.sent_upto = top
                    continue
                if in_flight == 0:
                    last_progress = ticks_ms()
                self.sent_upto = last  # the last event the message holds
                self.published_batches += 1
                continue
            if in_flight > 0 and ticks_diff(ticks_ms(), last_progress) > self.ack_timeout_ms:
                # The platform did not acknowledge in time: resend from the first unacked.
                self.resends += 1
                self.sent_upto = j.acked
                last_progress = ticks_ms()
                continue
            self._summarize()
            if not self.trusted_time and ticks_diff(ticks_ms(), self._nonce_at) > _REANNOUNCE_MS:
                await self._announce(client)  # the platform was away: ask for a time again
            self._wake.clear()
            for _ in range(20):  # 200 ms, woken within 10: sleep_ms allocates nothing
                await asyncio.sleep_ms(10)
                if self._wake.is_set() or not client.connected \
                        or held and not (client.delivering or gcpace.card_first()):
                    break

    async def run(self):
        backoff = Backoff()
        while True:
            try:
                delay = await self._attempt(backoff)
            except Exception as e:  # noqa: BLE001 - the uplink must outlive its own bookkeeping
                # What follows a failed attempt (its reason, the log line, a new status key)
                # allocates too, and a heap in pieces can refuse it: escaping here stopped the
                # firmware, a door cut off for good (the soak at 68 KiB, 5 December). Nothing is
                # lost (the journal holds every event): collect, wait the next step, go on.
                if isinstance(e, MemoryError):
                    self.out_of_memory += 1
                    self.status["uplink_out_of_memory"] = self.out_of_memory
                gc.collect()
                delay = backoff.next_ms()
                try:
                    log("uplink: recovering from", type(e).__name__)
                except MemoryError:
                    pass
            await asyncio.sleep_ms(delay)

    async def _attempt(self, backoff):
        """One connection, from connecting to its end; the wait before the next one (ms)."""
        self._up = False
        why = ""
        try:
            await self._session()
        except TLSError as e:
            # Said plainly for the installer (doorctl logs, selftest); the journal keeps
            # every event, and the next attempt comes with the usual backoff.
            why = str(e)
            if not why.startswith("TLS"):
                why = "TLS setup failed: " + why  # a file on the door, not the broker
            self._failed(why, True)
            log("uplink:", why)
        except (OSError, MQTTError, asyncio.TimeoutError, EOFError, ValueError) as e:
            why = "%s %s" % (type(e).__name__, e)
            if not self._up:
                self._failed(why)
            log("uplink: connection failed:", why)
        except MemoryError:
            # Nothing is lost (the journal holds every event): free memory, start over.
            self.out_of_memory += 1
            self.status["uplink_out_of_memory"] = self.out_of_memory
            gc.collect()
            why = "out of memory"
            if not self._up:
                # A TLS handshake needs a few tens of KiB at once (mbedTLS's records).
                why = "out of memory while connecting" + \
                    (" (TLS handshake)" if broker_tls(self.broker) else "")
                self._failed(why)
            log("uplink: out of memory, reconnecting")
        if why:
            self._note_error(why)
        if self._up:
            # The broker took the connection: the link works, whatever ended it. The next
            # attempt comes after the first step again, not after a growing wait.
            self.dropped_after_connack += 1
            self.status["uplink_dropped"] = self.dropped_after_connack
            backoff.reset()
        self._summarize()
        delay = backoff.next_ms()
        self.status["uplink_retry_in_ms"] = delay
        now = self.utc() if self.utc is not None else None
        self.status["uplink_retry_at"] = None if now is None else int(now) + delay // 1000
        return delay

