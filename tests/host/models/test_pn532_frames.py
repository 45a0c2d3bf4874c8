"""Fuzzing the PN532 driver's frame parser and command logic with malformed PN532 output: random
bytes, truncated and corrupted frames, oversized lengths. Only PN532Error may escape, every wait
ends (a stand-in clock advances on each empty read), and the buffers never grow."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from card_reader import pn532 as p
from host_tools.pn532_sync import PN532

RESPONSES = [
    bytes.fromhex("0332010607"),
    bytes.fromhex("4B01010344200704112233445566067577810280"),
    bytes.fromhex("4B0101000408" "04922E5832"),
    bytes.fromhex("410091AF"),
    bytes.fromhex("15"),
]


class Clock:
    def __init__(self) -> None:
        self.t = 0

    def ticks_ms(self) -> int:
        return self.t

    def ticks_diff(self, a: int, b: int) -> int:
        return a - b


class Chunks:
    """Serves a fixed byte string in chunks, then times out forever."""

    def __init__(self, clock: Clock, data: bytes, sizes: list[int]) -> None:
        self.clock = clock
        self.data = data
        self.sizes = sizes or [64]
        self.i = 0
        self.reads = 0

    def write(self, buf: bytes) -> int:
        return len(buf)

    def read(self, n: int, timeout_ms: int) -> bytes:
        self.reads += 1
        if not self.data:
            self.clock.t += timeout_ms
            return b""
        size = min(n, max(1, self.sizes[self.i % len(self.sizes)]))
        self.i += 1
        out, self.data = self.data[:size], self.data[size:]
        return out


def mutate(frame: bytes, kind: int, pos: int, value: int) -> bytes:
    if not frame:
        return bytes([value])
    pos %= len(frame)
    if kind == 0:  # truncate
        return frame[:pos]
    if kind == 1:  # flip a byte
        return frame[:pos] + bytes([frame[pos] ^ (value or 1)]) + frame[pos + 1:]
    if kind == 2:  # insert a byte
        return frame[:pos] + bytes([value]) + frame[pos:]
    if kind == 3:  # drop a byte
        return frame[:pos] + frame[pos + 1:]
    return frame


def run_all_commands(data: bytes, sizes: list[int]) -> None:
    clock = Clock()
    d = PN532(Chunks(clock, data, sizes), clock=clock)
    d.core.tg = 1
    parser_buf = d.core.parser.data
    tx = d.core.tx
    for call in (d.firmware_version, d.list_target, lambda: d.exchange(b"\x90\x60\x00\x00\x00"),
                 d.release):
        try:
            call()
        except p.PN532Error as e:
            assert 0 < e.code < len(p.REASONS) and isinstance(str(e), str)
        d.core.tg = 1
    assert d.core.parser.data is parser_buf and len(parser_buf) == p.MAX_DATA
    assert d.core.tx is tx and len(tx) == p.MAX_FRAME
    assert len(d.core._pend) <= 64


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_parser_survives_random_bytes(data: bytes) -> None:
    parser = p.FrameParser()
    for b in data:
        ev = parser.feed(b)
        assert p.EV_NONE <= ev <= p.EV_BAD_LEN
        assert parser.length <= p.MAX_DATA
    assert len(parser.data) == p.MAX_DATA


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200), st.lists(st.integers(1, 80), max_size=5))
def test_driver_survives_random_streams(data: bytes, sizes: list[int]) -> None:
    run_all_commands(data, sizes)
    run_all_commands(p.ACK + data, sizes)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(RESPONSES), st.lists(st.tuples(st.integers(0, 4), st.integers(0, 300),
                                                       st.integers(0, 255)), min_size=1, max_size=4),
       st.lists(st.integers(1, 80), max_size=5))
def test_driver_survives_corrupted_frames(body: bytes, edits: list[tuple[int, int, int]],
                                          sizes: list[int]) -> None:
    frame = p.ACK + p.encode_frame(p.TFI_PN532, body)
    for kind, pos, value in edits:
        frame = mutate(frame, kind, pos, value)
    run_all_commands(frame * 3, sizes)


@settings(max_examples=200, deadline=None)
@given(st.integers(256, 0xFFFF), st.binary(max_size=600))
def test_oversized_lengths_are_refused(n: int, tail: bytes) -> None:
    lenm, lenl = n >> 8, n & 0xFF
    head = bytes([0, 0, 0xFF, 0xFF, 0xFF, lenm, lenl, (-(lenm + lenl)) & 0xFF])
    parser = p.FrameParser()
    events = [parser.feed(b) for b in head]
    if n > p.MAX_DATA:
        assert events[-1] == p.EV_TOO_LONG
    run_all_commands(p.ACK + head + tail, [64])


HOST_FRAMES = st.binary(min_size=1, max_size=p.MAX_DATA - 1).map(lambda d: p.encode_frame(p.TFI_HOST, d))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=80), HOST_FRAMES), max_size=6))
def test_emulator_survives_malformed_host_frames(chunks: list[bytes]) -> None:
    from host_tools.pn532_emu import LocalCard, PN532Emulator

    emu = PN532Emulator()
    emu.present(LocalCard(lambda apdu: b"\x90\x00", bytes.fromhex("04112233445566")))
    for chunk in chunks:
        out = emu.receive(chunk)
        parser = p.FrameParser()
        for b in out:  # whatever it answers is well-formed PN532 output
            assert parser.feed(b) in (p.EV_NONE, p.EV_ACK, p.EV_FRAME, p.EV_ERROR_FRAME)
