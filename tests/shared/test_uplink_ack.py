# mpy-heapsize: 160K
# Signed acknowledgements and resend requests, under CPython and MicroPython alike: what the
# door frees and what it sends again (docs/protocol.md, "Acknowledgements", "Resend requests").
import asyncio

from board.vdev.flashsim import FlashSim
from crypto.hmac256 import hmac_sha256
from crypto.keystore import SoftwareKeyStore
from wire import common
from wire.door import decode_ack, decode_resend, decode_signed_ack, encode_events
from wire.platform import decode_batch, encode_ack, encode_resend
from firmware.journal import Journal

KEY = b"C" * 16
DEV = "site.b1.d1"


def _ack(upto, boot=3, key=KEY, dev=DEV):
    mac = hmac_sha256(key, common.ack_signing_bytes(dev, boot, upto)).hex()
    return encode_ack(upto, boot, mac)


def _uplink(blocks=8, key=KEY):
    from firmware.uplink import Uplink

    j = Journal(FlashSim(path=None, block_size=1024, block_count=blocks))
    up = Uplink(j, DEV, 3, "0", {"host": "127.0.0.1"})
    if key is not None:
        up.keystore = SoftwareKeyStore(1, b"DOOR", {"command": key})
    return j, up


def _fill(j, n):
    for i in range(n):
        j.append(1, 1, 3, 1767225600 + i, 0, 0)


def test_ack_codec_vectors():
    raw = b'{"v": 1, "upto": 42, "boot": 7, "mac": "' + b"ab" * 32 + b'"}'
    assert decode_signed_ack(raw) == (42, 7, "ab" * 32)
    assert decode_signed_ack(b'{"v": 1, "upto": 42}') == (42, None, "")
    assert decode_ack(raw) == 42
    assert common.ack_signing_bytes("d.1", 7, 42) == b"door-ack/v1|3:d.17|42"
    for bad in (b'{"v": 1, "upto": 1, "boot": 70000}', b'{"v": 1, "upto": 1, "mac": 5}'):
        try:
            decode_signed_ack(bad)
        except common.ProtocolError as e:
            assert e.reason == "bad_field"
        else:
            raise AssertionError(bad)


def test_resend_and_gone_codec_vectors():
    assert decode_resend(b'{"v": 1, "from": 5, "to": 9}') == (5, 9)
    assert decode_resend(encode_resend(1, 1)) == (1, 1)
    for bad in (b'{"v": 1, "from": 9, "to": 5}', b'{"v": 1, "from": 0, "to": 5}', b'{"v": 1, "to": 5}'):
        try:
            decode_resend(bad)
        except common.ProtocolError as e:
            assert e.reason == "bad_field"
        else:
            raise AssertionError(bad)
    assert decode_batch(encode_events(3, [], (1, 40))) == (3, [], (1, 40))
    ev = [(41, 1, 3, 5, 0, 1, 0, "")]
    assert decode_batch(encode_events(3, ev, (1, 40))) == (3, ev, (1, 40))
    assert decode_batch(encode_events(3, ev)) == (3, ev, None)
    for bad in (b'{"v": 1, "boot": 1, "ev": [], "gone": [5, 4]}',
                b'{"v": 1, "boot": 1, "ev": [], "gone": [0, 4]}',
                b'{"v": 1, "boot": 1, "ev": [], "gone": [1]}', b'{"v": 1, "boot": 1, "ev": []}'):
        try:
            decode_batch(bad)
        except common.ProtocolError as e:
            assert e.reason == "bad_field"
        else:
            raise AssertionError(bad)


def test_a_door_with_a_command_key_frees_only_on_the_platforms_signed_ack():
    j, up = _uplink()
    _fill(j, 40)
    up.sent_upto = 40
    topic = common.topic(DEV, "ack")
    up._on_message(topic, encode_ack(40), False)  # unsigned: a broker user's
    up._on_message(topic, encode_ack(40, 3, "00" * 32), False)  # forged tag
    up._on_message(topic, _ack(40, key=b"X" * 16), False)  # another site's key
    up._on_message(topic, _ack(40, dev="site.b1.d2"), False)  # made for another door
    up._on_message(topic, _ack(40, boot=2), False)  # made for another boot
    assert j.acked == 0 and up.rejected == 5
    assert up.last_reject == "stale_ack"
    up._on_message(topic, _ack(30), False)
    assert j.acked == 30
    up._on_message(topic, _ack(99), False)  # signed, but beyond what was sent: clamped
    assert j.acked == 40


def test_a_door_without_keys_takes_an_unsigned_ack():
    j, up = _uplink(key=None)
    _fill(j, 10)
    up.sent_upto = 10
    up._on_message(common.topic(DEV, "ack"), encode_ack(10), False)
    assert j.acked == 10


class _Client:
    connected = True
    delivering = False  # no message in its handler

    def __init__(self):
        self.sent = []

    async def publish(self, topic, payload, qos=0, retain=False):
        self.sent.append((topic, decode_batch(payload)))


def _serve(up, first, last):
    client = _Client()
    up._on_message(common.topic(DEV, "resend"), encode_resend(first, last), False)
    asyncio.run(up._serve_resend(client))
    return [b for _, b in client.sent]


def test_a_resend_request_sends_what_the_door_holds_and_names_the_rest_gone():
    j, up = _uplink(blocks=6)  # 4 data sectors of 31 records
    _fill(j, 60)
    up.sent_upto = 60
    j.ack(60)  # acknowledged: still on the flash until the ring comes round
    batches = _serve(up, 20, 50)
    seqs = [e[0] for b in batches for e in b[1]]
    assert seqs == list(range(20, 51))
    assert all(b[2] is None for b in batches)
    for _ in range(4):  # the ring comes round: the oldest acknowledged sectors are reused
        _fill(j, 30)
        up.sent_upto = j.next_seq - 1
        j.ack(up.sent_upto)
    assert j.lost == 0
    oldest = j.oldest_seq()
    assert oldest > 50
    batches = _serve(up, 20, oldest + 3)
    assert batches[0][2] == (20, oldest - 1)
    assert [e[0] for b in batches for e in b[1]] == list(range(oldest, oldest + 4))


def test_a_resend_request_above_the_acknowledged_point_is_left_to_the_usual_resend():
    j, up = _uplink()
    _fill(j, 30)
    j.ack(10)
    assert _serve(up, 11, 30) == []
    assert [e[0] for b in _serve(up, 5, 30) for e in b[1]] == list(range(5, 11))


def test_a_long_gone_range_is_named_at_once_and_a_window_of_records_follows():
    # The platform lost its database: it asks for everything the door ever acknowledged.
    j, up = _uplink(blocks=8)  # 6 data sectors of 31
    for _ in range(12):
        _fill(j, 30)
        up.sent_upto = j.next_seq - 1
        j.ack(up.sent_upto)
    oldest = j.oldest_seq()
    assert oldest > 150
    up.window = 2  # two batches of records per request
    batches = _serve(up, 1, j.acked)
    assert batches[0][2] == (1, oldest - 1)
    assert [e[0] for b in batches for e in b[1]] == list(range(oldest, oldest + 2 * up.batch))


def test_a_ring_overflow_is_answered_as_gone_with_the_exact_range():
    # Nothing acknowledged, the ring overwritten: the journal moved its ack past the loss.
    j, up = _uplink(blocks=6)
    _fill(j, 200)
    assert j.lost > 0
    batches = _serve(up, 1, j.acked)
    assert batches[0][2] == (1, j.oldest_seq() - 1)
    assert j.oldest_seq() - 1 == j.acked  # exactly what was lost, nothing on the flash


def _fill_large(j, n):
    # The largest events a door journals: 32-bit numbers, 12 bytes of data (24 hex digits).
    for i in range(n):
        j.append(2, 0, 3, 4000000000 + i, 999, 65535, bytes(range(i % 200, i % 200 + 12)))


def _batch(j, up, first, n):
    from firmware.uplink import event_tuple

    return [event_tuple(r, up.boot, up.timebase) for r in j.read(first, n)]


def test_a_batch_of_card_decisions_goes_out_in_two_messages_of_the_events_buffer():
    j, up = _uplink(blocks=8)
    for i in range(up.batch):  # a card's decision: its 8-byte reference as data
        j.append(2, 0, 3, 1767225600 + i, 999, 41, bytes(range(i, i + 8)))
    want = [tuple(e) for e in _batch(j, up, 1, up.batch)]
    payload, n, last = up._batch_payload(1, j.next_seq - 1)
    assert isinstance(payload, memoryview)
    assert up.batch // 2 <= n < up.batch and last == n
    first = decode_batch(bytes(payload))
    payload, n2, last = up._batch_payload(n + 1, j.next_seq - 1)
    assert isinstance(payload, memoryview)
    assert (n + n2, last) == (up.batch, up.batch)
    assert first == (3, want[:n], None) and decode_batch(bytes(payload)) == (3, want[n:], None)


def test_a_batch_the_buffer_cannot_hold_goes_out_in_it_in_smaller_messages():
    j, up = _uplink(blocks=8)
    _fill_large(j, 16)
    up._tx = bytearray(600)  # holds fewer than a batch of these
    want = [tuple(e) for e in _batch(j, up, 1, 16)]
    payload, n, last = up._batch_payload(1, 16)
    assert isinstance(payload, memoryview)  # the uplink's own buffer, no JSON string made
    assert 1 < n < 16 and last == n  # cut to what the message holds
    assert decode_batch(bytes(payload)) == (3, want[:n], None)
    up._tx = bytearray(40)  # not even one event: that one is sent as a string
    payload, n, last = up._batch_payload(1, 16)
    assert (n, last) == (1, 1)
    assert decode_batch(payload) == (3, want[:1], None)


def test_a_batch_stops_at_its_last_and_can_carry_gone_alone():
    j, up = _uplink(blocks=8)
    _fill(j, 10)
    payload, n, last = up._batch_payload(3, 6)
    assert (n, last) == (4, 6)
    assert [e[0] for e in decode_batch(bytes(payload))[1]] == [3, 4, 5, 6]
    payload, n, last = up._batch_payload(5, 4, (1, 4))  # nothing held: the range as gone
    assert n == 0
    assert decode_batch(bytes(payload)) == (3, [], (1, 4))


def test_a_batch_is_read_one_record_at_a_time():
    """The sender never holds a batch of record tuples: the journal hands it one at a time,
    and each is written into the buffer before the next is read."""
    j, up = _uplink(blocks=8)
    _fill(j, 20)
    handed = []
    records = j.records

    def one_at_a_time(first, count):
        for rec in records(first, count):
            if handed:  # the one before is in the message already
                assert (b"[%d, " % handed[-1]) in bytes(up._tx), handed
            handed.append(rec[0])
            yield rec

    j.records = one_at_a_time
    payload, n, last = up._batch_payload(1, 20)
    assert handed == list(range(1, up.batch + 1)) and n == up.batch


def test_events_cut_into_smaller_messages_are_each_sent_once_in_order():
    j, up = _uplink(blocks=8)
    _fill_large(j, 40)
    up._tx = bytearray(400)  # a few of these a message: fewer than a batch
    sent = []

    class Client(_Client):
        async def publish(self, topic, payload, qos=0, retain=False):
            assert isinstance(payload, memoryview)
            batch = decode_batch(payload)
            sent.append(batch)
            if batch[1][-1][0] == 40:
                self.connected = False

    asyncio.run(up._send_loop(Client()))
    assert [e[0] for b in sent for e in b[1]] == list(range(1, 41))
    assert len(sent) > 40 // up.batch + 1
    assert up.sent_upto == 40
    j.ack(40)  # and asked for again
    batches = _serve(up, 1, 40)
    assert [e[0] for b in batches for e in b[1]] == list(range(1, 41))
    assert len(batches) > 40 // up.batch + 1


def test_events_journaled_while_a_batch_waits_for_the_buffer_are_not_skipped():
    """The batch's range ends where the journal ended when it was decided: a range found
    unreadable (torn slots) moves the sender to that end, not past events journaled while the
    batch waited for the events buffer (the patrol report had it)."""
    j, up = _uplink(blocks=8)
    _fill(j, 5)
    records = j.records
    torn = [True]

    def first_range_torn(first, count):
        if torn[0]:
            torn[0] = False
            return iter(())
        return records(first, count)

    j.records = first_range_torn
    take = up._take_tx

    async def take_after_three_more():
        _fill(j, 3)  # journaled while the sender waited for the buffer
        up._take_tx = take
        await take()

    up._take_tx = take_after_three_more
    sent = []

    class Client(_Client):
        async def publish(self, topic, payload, qos=0, retain=False):
            batch = decode_batch(payload)
            sent.extend(e[0] for e in batch[1])
            if batch[1][-1][0] == 8:
                self.connected = False

    asyncio.run(up._send_loop(Client()))
    assert sent == [6, 7, 8]  # 1..5 torn (here), 6..8 sent, none skipped
