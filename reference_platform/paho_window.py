"""paho's MQTT client with its send window refilled in constant time.

paho keeps every QoS 1 message it has not finished in one ordered dict, and at each PUBACK
walks it from the oldest message to find the next one waiting for a free place in the window
(`max_inflight_messages`): with the platform's window of 1,000 that walk is a thousand steps
per acknowledgement, and a lost card fanned out to 16,900 doors spent a quarter of the
platform's CPU in it. Here the waiting messages are also kept in a queue of their ids, in
the order paho sends them, so the next one is found at once. Which messages are sent, in
which order, with which flags, is paho's: the same `_send_publish` call, the same states.

paho also reads the socket a byte or two at a time (a packet's type, each byte of its length,
then its body: three or four `recv` calls a packet) and handles one packet per `select` when
nothing of its own is in flight, as when a fan-out's thousands of answers come in. Here its
reads are served from one `recv` of up to 64 KiB, and every packet that read brought is
handled before the next `select` (`_sock_recv`, `loop_read`). Over TLS, where one read returns
one record and mosquitto makes each small packet a record, the records already received are
read on until READ_SIZE or nothing is left (`_more_records`).

It leans on paho 2.x's private names (`_out_messages`, `_inflight_messages`,
`_update_inflight`, `_messages_reconnect_reset_out`); tests/host/services/test_paho_window.py sends
past the window through a real mosquitto, across a broker restart, and fails if paho changes
under it. A paho without those names gets paho's own walk (`WindowedClient.fast`).
"""

from __future__ import annotations

import collections
import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTTErrorCode

_QUEUED = mqtt.MessageState.MQTT_MS_QUEUED
_WAIT_PUBACK = mqtt.MessageState.MQTT_MS_WAIT_FOR_PUBACK
_WAIT_PUBREC = mqtt.MessageState.MQTT_MS_WAIT_FOR_PUBREC
READ_SIZE = 65536  # bytes read from the socket at once


class WindowedClient(mqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: collections.deque[int] = collections.deque()  # mids, in send order
        self.fast = all(hasattr(self, name) for name in (
            "_out_messages", "_out_message_mutex", "_inflight_messages",
            "_max_inflight_messages", "_send_publish", "_update_inflight",
            "_messages_reconnect_reset_out", "_sock_recv", "_sock"))
        self._rsock: Any = None  # the socket `_rbuf` was read from
        self._rbuf = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        """paho's read of `bufsize` bytes at most, from what one larger read brought."""
        if not self.fast:
            return super()._sock_recv(bufsize)
        if self._rsock is not self._sock:  # a new connection: nothing of the old one is kept
            self._rsock, self._rbuf, self._rpos = self._sock, b"", 0
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(READ_SIZE)  # BlockingIOError when nothing came
            if data and isinstance(self._sock, ssl.SSLSocket):
                data = self._more_records(data)
            if len(data) <= bufsize:
                return data  # b"": the connection ended
            self._rbuf, self._rpos = data, 0
        out = self._rbuf[self._rpos:self._rpos + bufsize]
        self._rpos += len(out)
        return out

    def _more_records(self, data: bytes) -> bytes:
        """Over TLS a read returns one record at most, and mosquitto writes each small packet
        as a record of its own: the records already received are taken too (up to READ_SIZE),
        or a fan-out's answers over TLS cost a `select` and a loop turn each."""
        parts = [data]
        size = len(data)
        while size < READ_SIZE:
            try:
                more = super()._sock_recv(READ_SIZE - size)
            except OSError:  # BlockingIOError: nothing more now
                break  # an error shows again at the next read
            if not more:
                break  # the end of the connection shows at the next read
            parts.append(more)
            size += len(more)
        return b"".join(parts)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's, then again while the last read left whole or partial packets unread."""
        rc = super().loop_read(max_packets)
        while (self.fast and rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None
               and self._rsock is self._sock and self._rpos < len(self._rbuf)):
            rc = super().loop_read(max_packets)
        return rc

    def publish(self, topic: str, payload: Any = None, qos: int = 0, retain: bool = False,
                properties: Any = None) -> mqtt.MQTTMessageInfo:
        if not self.fast:
            return super().publish(topic, payload, qos, retain, properties)
        with self._out_message_mutex:  # paho's lock (reentrant): no PUBACK in between
            info = super().publish(topic, payload, qos, retain, properties)
            message = self._out_messages.get(info.mid)
            if message is not None and message.state == _QUEUED:
                self._waiting.append(info.mid)
        return info

    def _messages_reconnect_reset_out(self) -> None:
        super()._messages_reconnect_reset_out()
        if self.fast:
            with self._out_message_mutex:  # the window starts again from the oldest message
                self._waiting = collections.deque(
                    mid for mid, m in self._out_messages.items() if m.state == _QUEUED)

    def _update_inflight(self) -> MQTTErrorCode:
        """paho's own, from the first waiting message instead of the oldest in flight."""
        if not self.fast:
            return super()._update_inflight()
        waiting = self._waiting
        while waiting and self._inflight_messages < self._max_inflight_messages:
            m = self._out_messages.get(waiting[0])
            if m is None or m.qos == 0 or m.state != _QUEUED:
                waiting.popleft()  # gone, or sent another way meanwhile
                continue
            waiting.popleft()
            self._inflight_messages += 1
            m.state = _WAIT_PUBACK if m.qos == 1 else _WAIT_PUBREC
            rc = self._send_publish(m.mid, m.topic.encode("utf-8"), m.payload, m.qos, m.retain,
                                    m.dup, properties=m.properties)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
        return MQTTErrorCode.MQTT_ERR_SUCCESS
