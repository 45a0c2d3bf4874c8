"""Platform ingest: subscribe to every door's events, store them, acknowledge after commit.

Several instances can run side by side: events arrive through an MQTT shared subscription
(`$share/<group>/door/v1/+/events`), so each batch goes to one instance; storage is
idempotent per (device, seq) and the acknowledgement is computed from the database after
the commit, so whichever instance acks, it never acks what is not stored.
`$share/` is MQTT 5 (mosquitto also allows it on 3.1.1); a strict 3.1.1 broker (RabbitMQ,
amqtt) grants the filter and delivers nothing to it. With `subscription="auto"` the platform
checks at each connection: a probe published to its own shared filter that does not come back
within PROBE_S means a plain `door/v1/+/events` subscription instead, where every instance gets
every batch and stores it idempotently. On connecting the platform also asks every door to
announce itself (`door/v1/announce`), since such a broker never delivers the doors' retained
presence to a wildcard subscription.
The broker's PUBACK for an events message is sent only after the commit (paho manual ack),
so a platform that dies mid-batch gets the batch again. The network thread only decodes: a
storing thread writes whatever batches and presence changes arrived meanwhile in one
transaction (Store.store_batches), then acks the doors and the broker.

The ingest never waits on a hole: when a door's batch lies beyond events the platform does
not hold, it asks the door for them (`resend`); the door sends what it still has and names
the rest `gone`, which is stored as a gap (docs/protocol.md, "Resend requests"). With the
site's `command` key, acknowledgements carry a MAC the door checks before it frees anything.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from crypto.hmac256 import hmac_sha256
from reference_platform import scope_alarms
from reference_platform.door_signing import DoorSigner
from reference_platform.paho_window import WindowedClient
from reference_platform.store import Store
from wire import common
from wire.platform import (
    decode_batch,
    decode_cache_state,
    decode_presence,
    decode_register,
    decode_reply,
    decode_status,
    encode_ack,
    encode_resend,
    encode_signed_time,
    encode_time,
)

log = logging.getLogger("doorctl.platform")

SUBSCRIPTIONS = ("auto", "shared", "plain")
PROBE_S = 3.0  # how long a shared-subscription probe may take to come back
GROUP_MAX = 500  # messages stored in one transaction at most
STORE_ATTEMPTS = 3  # a group's transaction, tried again after a failure
INFLIGHT = 1000  # QoS 1 messages sent and not yet acknowledged by the broker (paho: 20)
FANOUT_BULK_MIN = 100  # messages from which a fan-out gets a connection of its own


class _StateWatch:
    """Doors whose cache state a caller awaits (Platform.wait_cache_states)."""

    def __init__(self, devices: Iterable[str], cond: Any) -> None:
        self.waiting = set(devices)
        self.cond = cond
        self.states: dict[str, dict[str, Any]] = {}
        self.done = threading.Event()
        if not self.waiting:
            self.done.set()

    def seen(self, device: str, state: dict[str, Any]) -> bool:
        """True when this wait takes the state (the door was awaited and meets the condition)."""
        if device in self.waiting and self.cond(state):
            self.waiting.discard(device)
            self.states[device] = state
            if not self.waiting:
                self.done.set()
            return True
        return False


class _Batch:
    """An events message waiting for the store: acked to its door and to the broker after
    the commit of the group it is stored in."""

    __slots__ = ("device", "boot", "events", "mid", "qos")

    def __init__(self, device: str, boot: int, events: list[Any], mid: int, qos: int) -> None:
        self.device, self.boot, self.events, self.mid, self.qos = device, boot, events, mid, qos


class Platform:
    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 1883,
                 group: str = "ingest", client_id: str | None = None,
                 username: str | None = None, password: str | None = None,
                 tls_ca: str | None = None, ingest: bool = True, tls_cert: str | None = None,
                 tls_key: str | None = None, ack_key: bytes | None = None,
                 lease: bool = True, lease_term_s: float = 15.0, subscription: str = "auto",
                 site_keys: dict[str, Any] | None = None,
                 site_keys_reload: Callable[[], dict[str, Any]] | None = None) -> None:
        """`ack_key`: the site's `command` key; acknowledgements are signed with it (a
        commissioned door ignores unsigned ones), and so is the time sent to a door, with the
        nonce of its presence (the door trusts only such a time: card validity, schedules).
        `site_keys`: the site key file's content instead: each door is signed for with its own
        keys on a per-door site (reference_platform/door_signing.py); `site_keys_reload`
        reads the site file again (a door registering with keys the record does not give it).
        `subscription`: how events are received (SUBSCRIPTIONS; "auto" probes the broker)."""
        if subscription not in SUBSCRIPTIONS:
            raise ValueError(f"subscription must be one of {', '.join(SUBSCRIPTIONS)}")
        self.store = store
        self.subscription = subscription
        self.events_filter = ""  # the events subscription in use ("" until chosen)
        self._probe_seen = threading.Event()
        self._events_mid: int | None = None
        self._subacked: set[int] = set()  # SUBACKed message ids (the events one may come first)
        self.ack_key = ack_key
        self.cache_key: bytes | None = None  # tags whitelist pieces (distribute.send)
        self.signer: DoorSigner | None = None
        if site_keys is not None:
            self.signer = DoorSigner(site_keys, site_keys_reload)
            self.cache_key = None
        self._nonces: dict[str, str] = {}  # device -> the nonce of its last presence
        # Singleton work (time messages, whitelist catch-up) only while holding the lease in
        # the database (reference_platform/lease.py); ingest runs on every instance.
        self._lease_term_s = lease_term_s
        self._keeper: Any = None
        self._use_lease = lease and ingest
        self.resend_requests = 0
        self._asked: dict[str, tuple[int, float]] = {}  # device -> (first asked for, when)
        self._holes: dict[str, tuple[int, float]] = {}  # device -> (first missing, first seen)
        self.host = host
        self.port = port
        self.group = group
        self.ingest = ingest  # False: a tool that sends (commands, whitelists) but stores no events
        self.rejected = 0
        self.stored_batches = 0
        self.store_failures = 0  # messages whose storage failed (the door sends events again)
        self.connected = threading.Event()
        self.fanout_bulk = True  # False: a fan-out publishes through paho (the bench's baseline)
        self.bulk_published = 0  # fan-out messages the broker acknowledged on their own connection
        # The last fan-out's stages (time.monotonic()): publish_many called (every message
        # encoded), its last message acknowledged by the broker (the bench's per-stage figures).
        self.fanout_stages: dict[str, float] = {}
        # Events and presence go to one storing thread, which writes whatever has arrived
        # meanwhile in one transaction (Store.store_batches): a few round trips and one commit
        # for many doors, while the network thread goes on reading.
        self._inbox: queue.SimpleQueue[_Batch | tuple[Any, ...] | None] = queue.SimpleQueue()
        self._storer: threading.Thread | None = None
        self.replies: dict[str, dict[str, Any]] = {}  # command id -> the door's reply
        self._replies_cond = threading.Condition()
        self.cache_states: dict[str, dict[str, Any]] = {}  # device -> its last cache_state
        self._state_watches: list[_StateWatch] = []
        # With a card registry (reference_platform/cards.py), a door that reports an older
        # whitelist (it was off, or an update did not get through) is brought up to date.
        self.registry: Any = None
        # Called with a door's state to ask whether to resync it, then with (self, [device]) to
        # do it: distribute.attach registers one beside the registry (ingest never imports it).
        self.whitelist_listener: Any = None
        self._syncing: set[str] = set()
        # A named instance keeps its session across restarts (what was queued for it is
        # delivered when it returns). An anonymous one must not: in a shared subscription an
        # offline persistent session keeps receiving its share of the doors' batches, which
        # then wait for the doors to resend them. Nothing is lost either way: a door keeps
        # every event until the platform acknowledges it.
        self._client_id = client_id or f"platform-{uuid.uuid4().hex[:8]}"
        self._client = WindowedClient(  # paho's, its window refilled in constant time
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            clean_session=client_id is None, manual_ack=True,
        )
        self._login: tuple[str, str | None] | None = None  # also the fan-out's connection's
        if username is not None:
            self._login = (username, password)
        else:
            from reference_platform.broker_acl import env_login

            self._login = env_login()  # DOORCTL_BROKER_USER / _PASSWORD_FILE, if set
        if self._login is not None:
            self._client.username_pw_set(*self._login)
        self._tls = tls_ca is not None
        if tls_ca is not None:
            # The broker's certificate is checked against this CA and its host name; with a
            # client certificate the platform authenticates itself too (require_certificate).
            self._client.tls_set(ca_certs=tls_ca, certfile=tls_cert, keyfile=tls_key)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._subscribe_mid: int | None = None
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 5)
        self._client.max_inflight_messages_set(INFLIGHT)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Platform:
        if self._use_lease and self._keeper is None:
            from reference_platform.lease import LeaseKeeper, lease_for

            holder = f"{self._client_id}-{uuid.uuid4().hex[:8]}"  # this process, even under a reused name
            lease = lease_for(self.store, "platform-singleton", holder, self._lease_term_s)
            self._keeper = LeaseKeeper(lease, self._lease_term_s / 3).start()
        if self._storer is None:
            self._storer = threading.Thread(target=self._store_loop, name="platform-store",
                                            daemon=True)
            self._storer.start()
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        if self._storer is not None:
            self._inbox.put(None)  # what is still queued is not acked: the door sends it again
            self._storer.join(30)
            self._storer = None
        self.connected.clear()
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until everything published so far has reached the broker (a marker's PUBACK
        comes after theirs); False after `timeout`."""
        info = self._client.publish(f"doorctl/flush/{self._client_id}", b"", qos=1)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):  # not connected, or the queue refused it
            return False
        return info.is_published()

    def leader(self) -> bool:
        """True when this instance does the singleton work (it holds the lease, or it runs
        without one: a tool that only sends)."""
        return self._keeper is None or self._keeper.lease.held()

    def __enter__(self) -> Platform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- MQTT callbacks ------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    props: Any = None) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        # A door's whitelist state comes at QoS 0: no PUBACK back per answer, which a fan-out
        # to 16,900 doors paid 16,900 times on the network thread. It is a state, not an
        # event: the door publishes it retained and again at each announce, and a fan-out
        # serves a door whose answer it does not see on its own (distribute.sync).
        _, self._subscribe_mid = client.subscribe(
            [(f, 0 if leaf == "cache_state" else 1)
             for leaf in ("presence", "status", "reply", "cache_state", "register")
             for f in common.filters(leaf)])
        self.events_filter = ""
        if self.ingest and self.subscription == "auto":
            self._probe(client)
        elif self.ingest:
            self._subscribe_events(client, shared=self.subscription == "shared")
        client.publish(common.ANNOUNCE_TOPIC, b"", qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      props: Any = None) -> None:
        # Ready once the broker has the subscriptions (SUBACK), not at CONNACK: a door's batch
        # published in between would go to nobody (`platform run` says "ingesting" after this).
        # Ingesting, that is the events subscription's, chosen after the probe.
        self._subacked.add(mid)
        if mid == (self._events_mid if self.ingest else self._subscribe_mid):
            self.connected.set()

    def _shared_filter(self, topic: str) -> str:
        return f"$share/{self.group}/{topic}"

    def _probe_topic(self) -> str:
        return f"doorctl/probe/{self._client_id}"

    def _probe(self, client: mqtt.Client) -> None:
        """Does the broker deliver shared subscriptions? Publish to our own shared filter; the
        answer (or its absence after PROBE_S) picks the events subscription."""
        self._probe_seen = threading.Event()
        client.subscribe(self._shared_filter(self._probe_topic()), qos=1)
        client.publish(self._probe_topic(), b"probe", qos=1)
        seen = self._probe_seen

        def decide() -> None:
            shared = seen.wait(PROBE_S)
            if client.is_connected() and not self.events_filter:
                self._subscribe_events(client, shared)

        threading.Thread(target=decide, name="subscription-probe", daemon=True).start()

    def _subscribe_events(self, client: mqtt.Client, shared: bool) -> None:
        topics = common.filters("events")
        if shared:
            topics = [self._shared_filter(t) for t in topics]
        self.events_filter = topics[0]
        _, self._events_mid = client.subscribe([(t, 1) for t in topics])
        if self._events_mid in self._subacked:  # the SUBACK beat this assignment
            self.connected.set()
        log.info("events through %s (%s subscription)", self.events_filter,
                 "shared" if shared else "plain: the broker has no shared subscriptions")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       props: Any = None) -> None:
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.startswith("doorctl/probe/"):
            if msg.topic == self._probe_topic():
                self._probe_seen.set()
            client.ack(msg.mid, msg.qos)
            return
        try:
            if self._queue(msg):
                return  # acknowledged to the broker after its commit (_store_group)
            self._handle(msg.topic, msg.payload)
        except common.ProtocolError as e:
            self.rejected += 1
            log.warning("rejected %s: %s", msg.topic, e)
        except Exception:
            # Storage failed (a locked or full database, say). Nothing is acknowledged to the
            # door, which keeps the events and sends them again; the message itself is
            # acknowledged to the broker, so its delivery window does not fill. The platform
            # stays connected: a deliberate disconnect would end paho's network loop for good.
            self.store_failures += 1
            log.exception("could not store %s", msg.topic)
        client.ack(msg.mid, msg.qos)

    def _queue(self, msg: mqtt.MQTTMessage) -> bool:
        """Hand an events batch (without a `gone` range: that one is checked against the
        stored state, alone) or a presence message to the storing thread: True when taken
        (acknowledged to the broker by then or after its commit), False for any other message,
        handled at once. ProtocolError for a malformed one."""
        device, leaf = common.split_topic(msg.topic)
        if leaf not in ("events", "presence") or self._storer is None:
            return False
        if len(msg.payload) > common.limit(leaf):
            raise common.ProtocolError("too_large", f"{len(msg.payload)} bytes")
        if leaf == "presence":
            p = decode_presence(msg.payload)
            self._inbox.put((device, p["online"], p.get("boot"), p.get("fw"), time.time()))
            self._presence_seen(device, p)
            self._client.ack(msg.mid, msg.qos)  # nothing waits on its storage
            return True
        boot, events, gone = decode_batch(msg.payload)
        if gone is not None:
            return False
        self._inbox.put(_Batch(device, boot, events, msg.mid, msg.qos))
        return True

    def _store_loop(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            group = [item]
            while len(group) < GROUP_MAX:
                try:
                    more = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._inbox.put(None)  # stop after this group
                    break
                group.append(more)
            self._store_group(group)

    def _store_group(self, group: list[_Batch | tuple[Any, ...]]) -> None:
        """Store a group in one transaction, then ack each door (its watermark, once per
        door) and each message to the broker: nothing is acknowledged before the commit."""
        batches = [b for b in group if isinstance(b, _Batch)]
        presence = [p for p in group if not isinstance(p, _Batch)]
        marks: dict[str, int] = {}
        for attempt in range(STORE_ATTEMPTS):
            try:
                marks = self.store.store_batches([(b.device, b.events) for b in batches],
                                                 presence)
                break
            except Exception:
                # Tried again (a serialization failure or a lost connection passes; the
                # presence changes, acknowledged to the broker already, are in this group
                # only); then, as for one message (_on_message), the doors get no ack and
                # send again.
                if attempt + 1 < STORE_ATTEMPTS:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                self.store_failures += len(batches)
                log.exception("could not store %d batches and %d presence changes",
                              len(batches), len(presence))
        acked: set[tuple[str, int]] = set()
        for b in batches:
            upto = marks.get(b.device)
            if upto is not None:
                self.stored_batches += 1
                if (b.device, b.boot) not in acked:
                    acked.add((b.device, b.boot))
                    self._client.publish(common.topic(b.device, "ack"),
                                         self._ack(b.device, b.boot, upto), qos=1)
                if b.events and b.events[-1][0] > upto:
                    try:
                        self._ask_again(b.device, upto)
                    except Exception:  # noqa: BLE001 - asked again at the next batch
                        log.exception("could not look for %s's hole", b.device)
            self._client.ack(b.mid, b.qos)

    def _presence_seen(self, device: str, p: dict[str, Any]) -> None:
        if p["online"] and self.leader():
            # Time sync: a device sets its clock from the platform when it comes online
            # (sent by one instance: the lease holder), signed with the door's nonce.
            self._nonces[device] = p.get("nonce", "")
            self.publish(device, "time", self.time_message(device, p.get("nonce", "")))
            if self.signer is not None:
                with contextlib.suppress(ValueError):  # its cache key, prepared while the door
                    self.signer.tags(device)           # is online: a fan-out derives nothing

    def _handle(self, topic: str, payload: bytes | bytearray) -> None:
        device, leaf = common.split_topic(topic)
        if len(payload) > common.limit(leaf):  # the topic's limit (docs/protocol.md)
            raise common.ProtocolError("too_large", f"{len(payload)} bytes")
        if leaf == "events":
            boot, events, gone = decode_batch(payload)
            if gone is not None:
                self._check_gone(device, gone, events)
            upto = self.store.store_events(device, events, gone)
            self.stored_batches += 1
            self._client.publish(common.topic(device, "ack"), self._ack(device, boot, upto), qos=1)
            if events and events[-1][0] > upto:
                self._ask_again(device, upto)
        elif leaf == "presence":
            p = decode_presence(payload)
            self.store.record_presence(device, p["online"], p.get("boot"), p.get("fw"))
            self._presence_seen(device, p)
        elif leaf == "status":
            self.store.record_status(device, decode_status(payload))
        elif leaf == "register":
            reg = decode_register(payload)
            self.store.record_registration(device, reg)
            if self.signer is not None:
                self._registered(device, reg["keys"])
        elif leaf == "cache_state":
            state = decode_cache_state(payload)
            taken = False
            with self._replies_cond:
                self.cache_states[device] = state
                for watch in self._state_watches:
                    taken = watch.seen(device, state) or taken
                self._replies_cond.notify_all()
            if not taken:  # else a fan-out awaits this door's answer and serves it (sync)
                self._maybe_sync(device, state)
        elif leaf == "reply":
            reply = decode_reply(payload)
            with self._replies_cond:
                self.replies[str(reply["id"])] = {"device": device, **reply}
                self._replies_cond.notify_all()

    def _registered(self, device: str, claim_keys: str) -> None:
        """A door's registration names the keys it holds: the site file decides how it is
        signed for; a claim that disagrees is the `key_scope_mismatch` alarm."""
        assert self.signer is not None
        changed = self.signer.registered(device, claim_keys)
        claim = self.signer.disputed.get(device)
        recorded = self.signer.scope(device)
        scope_alarms.record(self.store, device, claim, recorded)
        if claim is not None:
            log.warning("door %s registers with %s keys, the site file gives it %s keys: signing by "
                        "the site file (key_scope_mismatch)", device, claim, recorded)
        if changed and self._nonces.get(device) and self.leader():
            # the time just sent was signed with keys this door does not hold: again
            self.publish(device, "time", self.time_message(device, self._nonces[device]))

    # -- platform -> device --------------------------------------------------------

    def command_key(self, device: str) -> bytes | None:
        """The key that signs commands, times and acknowledgements for `device`."""
        if self.signer is not None:
            return self.signer.key("command", device)
        return self.ack_key

    def whitelist_for(self, device: str, data: bytes, key: bytes | None = None) -> tuple[bytes, bytes | None]:
        """(file, piece key) of a site-signed whitelist file for `device`: signed again with
        the door's own cache key on a per-door site, else as it is with the site's key."""
        if self.signer is not None:
            return self.signer.whitelist_for(device, data), self.signer.key("cache", device)
        key = key or self.cache_key
        if key is None and getattr(self, "registry", None) is not None:
            key = self.registry.key
        return data, key

    def _ack(self, device: str, boot: int, upto: int) -> bytes:
        key = self.command_key(device)
        if key is None:
            return encode_ack(upto, boot)
        mac = hmac_sha256(key, common.ack_signing_bytes(device, boot, upto)).hex()
        return encode_ack(upto, boot, mac)

    def _check_gone(self, device: str, gone: tuple[int, int], events: list[Any]) -> None:
        """A `gone` range is the door's answer to a resend request: it can only name a hole
        the platform sees, starting at its watermark and ending below an event it holds (or
        the batch's first). Anything else is refused (`bad_gone`): a publisher on the door's
        events topic cannot declare events lost that the platform never missed, nor move the
        watermark, and so the signed ack, past what is stored."""
        upto = self.store.ack_upto(device)
        above = self.store.next_stored(device, gone[0] - 1)
        if events:
            above = min(above, events[0][0]) if above is not None else events[0][0]
        if gone[0] != upto + 1 or above is None or gone[1] >= above:
            raise common.ProtocolError("bad_gone", f"{gone[0]}..{gone[1]} at watermark {upto}")

    ASK_AGAIN_S = 3.0  # one request per hole in this time: a window of batches shows it 8 times
    HOLE_GRACE_S = 1.0  # a hole younger than this is a batch still on its way (another instance's)

    def _ask_again(self, device: str, upto: int) -> None:
        """Events above the watermark are stored but upto+1 is not: ask the door for the hole
        once it has lasted HOLE_GRACE_S. Before that it is usually no hole at all: with several
        instances on a shared subscription, batch k+1 can be stored before batch k."""
        nxt = self.store.next_stored(device, upto)
        if nxt is None or nxt <= upto + 1:
            return
        now = time.monotonic()
        hole, since = self._holes.get(device, (0, 0.0))
        if hole != upto + 1:
            self._holes[device] = (upto + 1, now)
            return
        if now - since < self.HOLE_GRACE_S:
            return
        first, when = self._asked.get(device, (0, 0.0))
        if first == upto + 1 and now - when < self.ASK_AGAIN_S:
            return
        self._asked[device] = (upto + 1, now)
        self.resend_requests += 1
        log.info("%s: events %d to %d missing, asking the door for them", device, upto + 1, nxt - 1)
        self.publish(device, "resend", encode_resend(upto + 1, nxt - 1))

    def time_message(self, device: str, nonce: str, now_ms: int | None = None) -> bytes:
        """The time for a door: signed with its nonce when the site key is known."""
        t = int(time.time() * 1000) if now_ms is None else now_ms
        key = self.command_key(device)
        if key is None or not nonce:
            return encode_time(t)
        mac = hmac_sha256(key, common.time_signing_bytes(device, nonce, t)).hex()
        return encode_signed_time(t, nonce, mac)

    def publish(self, device: str, leaf: str, payload: bytes, retain: bool = False) -> None:
        self._client.publish(common.topic(device, leaf), payload, qos=1, retain=retain)

    def publish_many(self, messages: list[tuple[str, str, bytes]], timeout: float = 30.0) -> None:
        """Publish (device, leaf, payload) messages at QoS 1, in order: a fan-out's, on a
        connection of its own written in bulk (reference_platform/fanout_writer.py) when
        there are at least FANOUT_BULK_MIN and the broker is reached without TLS, else one by
        one through paho. What the bulk connection did not get acknowledged goes through paho."""
        self.fanout_stages = {"publish": time.monotonic()}
        if len(messages) >= FANOUT_BULK_MIN and not self._tls and self.fanout_bulk:
            from reference_platform import fanout_writer

            left = fanout_writer.publish_all(
                self.host, self.port, [(common.topic(d, leaf), p) for d, leaf, p in messages],
                login=self._login, client_id=f"fanout-{self._client_id}-{uuid.uuid4().hex[:6]}",
                timeout=timeout)
            self.bulk_published += len(messages) - len(left)
            if left:
                log.warning("fan-out: %d of %d messages not acknowledged on their own connection, "
                            "sent again through the platform's", len(left), len(messages))
            messages = [messages[i] for i in left]
        for device, leaf, payload in messages:
            self.publish(device, leaf, payload)
        self.fanout_stages["published"] = time.monotonic()

    def command(self, device: str, op: str, args: dict[str, Any] | None, key: bytes | None = None) -> str:
        """Send a signed command (reference_platform/commands.py); returns its id. With the
        site's keys (`site_keys`) it is signed with the door's own command key, else `key`."""
        from reference_platform.commands import sign

        if self.signer is not None:
            key = self.signer.key("command", device)
        if key is None:
            raise ValueError("no command key to sign with")
        cmd_id, payload = sign(key, device, op, args)
        self.publish(device, "cmd", payload)
        return cmd_id

    def _maybe_sync(self, device: str, state: dict[str, Any]) -> None:
        listener = self.whitelist_listener
        if listener is None or state.get("receiving") or device in self._syncing or not self.leader():
            return
        if not listener.wanted(state):  # current, or ahead (a file the platform never issued)
            return
        self._syncing.add(device)

        def run() -> None:
            try:
                log.info("whitelist for %s: %s", device, listener(self, [device]))
            except Exception:
                log.exception("whitelist for %s failed", device)
            finally:
                self._syncing.discard(device)

        threading.Thread(target=run, name=f"sync-{device}", daemon=True).start()

    def wait_cache_states(self, devices: Iterable[str], cond: Any, timeout: float,
                          then: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]:
        """Each device's cache state once `cond(state)` holds for every one of them, or what
        held by `timeout`: the answers are taken as they arrive, on the network thread, and
        the caller is woken once (a fan-out to thousands of doors). `then`: called once the
        wait is in place (the fan-out's sending), so every answer is the wait's from the first."""
        with self._replies_cond:
            watch = _StateWatch(devices, cond)
            for device in list(watch.waiting):
                if device in self.cache_states:
                    watch.seen(device, self.cache_states[device])
            self._state_watches.append(watch)
        try:
            if then is not None:
                then()
            watch.done.wait(timeout)
        finally:
            with self._replies_cond:
                self._state_watches.remove(watch)
        with self._replies_cond:
            return dict(watch.states)

    def wait_cache_state(self, device: str, cond: Any, timeout: float = 30.0) -> dict[str, Any] | None:
        """The device's cache state once `cond(state)` holds, or None after `timeout`."""
        with self._replies_cond:
            self._replies_cond.wait_for(
                lambda: device in self.cache_states and cond(self.cache_states[device]), timeout)
            state = self.cache_states.get(device)
            return state if state is not None and cond(state) else None

    def wait_reply(self, cmd_id: str, timeout: float = 10.0) -> dict[str, Any] | None:
        """The door's reply to a command, or None when none came in time."""
        with self._replies_cond:
            self._replies_cond.wait_for(lambda: cmd_id in self.replies, timeout)
            return self.replies.get(cmd_id)
