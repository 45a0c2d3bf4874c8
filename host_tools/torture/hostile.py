"""The hostile publisher: someone with publish rights on the broker and no key, on every topic a
door reads (ack, cmd, time, resend, cache, the announce topic). It sends oversized, deeply nested,
retained, replayed (the platform's own acks, times and resend requests, captured earlier), forged
and badly timed messages, and junk floods. Every one of them must cost the door that message
only (docs/torture.md)."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from wire import common
from wire.platform import encode_ack, encode_command, encode_resend, encode_signed_time, encode_time

LEAVES = ("ack", "cmd", "time", "resend", "cache")
DAY_MS = 86_400_000
KINDS = ("oversized", "nested", "retained", "replay", "forged_ack", "forged_cmd", "bad_time",
         "resend", "junk")


def nested(depth: int) -> bytes:
    return b'{"v": 1, "upto": ' + b"[" * depth + b"]" * depth + b"}"


class Hostile:
    """A broker user publishing on the doors' topics; it also records what the platform sends
    them, to replay it later."""

    def __init__(self, host: str, port: int, devices: list[str], rng: random.Random) -> None:
        self.devices = devices
        self.rng = rng
        self.sent = 0
        self.by_kind: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.captured: deque[tuple[str, bytes]] = deque(maxlen=200)
        self._lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="torture-hostile")
        self.c.on_message = self._on_message
        self.c.on_connect = self._on_connect
        self.c.reconnect_delay_set(1, 2)
        self.c.connect_async(host, port, keepalive=10)
        self.c.loop_start()

    def _on_connect(self, client: mqtt.Client, *rest: object) -> None:
        for d in self.devices:
            for leaf in ("ack", "time", "resend", "cmd"):
                client.subscribe(common.topic(d, leaf), 0)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.captured.append((msg.topic, bytes(msg.payload)))

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()

    def connected(self) -> bool:
        return bool(self.c.is_connected())

    def _pick(self) -> tuple[str, str]:
        device = self.rng.choice(self.devices)
        return device, self.rng.choice(LEAVES)

    def message(self, kind: str) -> tuple[str, bytes, bool]:
        """(topic, payload, retain) of one hostile message of `kind`."""
        rng = self.rng
        device, leaf = self._pick()
        now_ms = int(time.time() * 1000)
        retain = False
        if kind == "oversized":
            payload = b'{"v": 1, "upto": ' + b"9" * rng.randint(4_000, 20_000) + b"}"
            retain = rng.random() < 0.3
        elif kind == "nested":
            payload = nested(rng.choice((5, 60, 2000)))
        elif kind == "retained":
            leaf = rng.choice(("ack", "cmd", "time"))
            payload = rng.choice((encode_ack(rng.randint(1, 10**6)),
                                  encode_time(now_ms + rng.choice((-1, 1)) * 400 * DAY_MS),
                                  encode_command(rng.randint(1, 10**6), "open")))
            retain = True
        elif kind == "replay":
            with self._lock:
                got = rng.choice(list(self.captured)) if self.captured else None
            if got is None:
                return self.message("forged_ack")
            return got[0], got[1], rng.random() < 0.2
        elif kind == "forged_ack":
            leaf = "ack"
            payload = encode_ack(rng.randint(1, 100_000), rng.randint(0, 50),
                                          os.urandom(32).hex())
        elif kind == "forged_cmd":
            leaf = "cmd"
            payload = encode_command(rng.randint(1, 10**6), rng.choice(common.COMMANDS),
                                              {}, expires=now_ms // 1000 + 60,
                                              mac=os.urandom(32).hex())
        elif kind == "bad_time":
            leaf = "time"
            shift = rng.choice((-1, 1)) * rng.randint(1, 4000) * DAY_MS
            nonce = os.urandom(8).hex()
            payload = rng.choice((encode_time(now_ms + shift),
                                  encode_signed_time(now_ms + shift, nonce,
                                                              os.urandom(32).hex())))
        elif kind == "resend":
            leaf = "resend"
            first = rng.randint(1, 5000)
            payload = encode_resend(first, first + rng.randint(0, 300))
        else:  # junk
            payload = os.urandom(rng.randint(0, 300))
        return common.topic(device, leaf), payload, retain

    def burst(self, n: int) -> int:
        """Publish `n` hostile messages (a junk flood is most of them); how many went out."""
        deadline = time.monotonic() + 5  # back from a broker fault: it reconnects within 2 s
        while not self.connected():
            if time.monotonic() > deadline:
                return 0
            time.sleep(0.1)
        sent = 0
        for _ in range(n):
            kind = self.rng.choice(KINDS)
            topic, payload, retain = self.message(kind)
            if self.rng.random() < 0.02:
                topic = common.ANNOUNCE_TOPIC
            info = self.c.publish(topic, payload, qos=1 if retain else 0, retain=retain)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                sent += 1
                self.by_kind[kind] += 1
        self.sent += sent
        return sent

    def clear_retained(self) -> None:
        """Remove every retained message it left on the doors' topics (the platform's retained
        cache snapshot is replaced too, when it put junk there)."""
        for d in self.devices:
            for leaf in LEAVES:
                self.c.publish(common.topic(d, leaf), b"", qos=1, retain=True)
