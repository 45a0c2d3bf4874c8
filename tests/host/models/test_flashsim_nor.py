"""The flash simulator against a plain model of NOR flash, on random operation sequences.

RAM-backed and file-backed simulators must agree with the model (and so with each other)
on contents, refusals and counters, including across 256-byte windows and block edges, and
a cut armed anywhere must leave exactly the model's torn prefix on the image.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from board.vdev.flashsim import FlashSim, PowerCut

BS = 512
BLOCKS = 4
SIZE = BS * BLOCKS
_names = itertools.count()


class Model:
    """NOR flash in a dozen lines: the reference the simulator is held to."""

    def __init__(self) -> None:
        self.img = bytearray(b"\xff" * SIZE)
        self.programmed = 0
        self.erased = 0
        self.ops = 0

    def program(self, addr: int, data: bytes, landed: int | None = None) -> None:
        old = self.img[addr : addr + len(data)]
        if any(d & ~o & 0xFF for d, o in zip(data, old, strict=True)):
            raise ValueError("0 to 1")
        self.ops += 1
        n = len(data) if landed is None else landed
        for i in range(n):
            self.img[addr + i] &= data[i]
        if landed is not None and n < len(data):
            self.img[addr + n] &= data[n] | 0x0F
            n += 1
        self.programmed += n

    def erase(self, block: int, landed: int | None = None) -> None:
        self.ops += 1
        n = BS if landed is None else landed
        self.img[block * BS : block * BS + n] = b"\xff" * n
        self.erased += 1


op = st.one_of(
    st.tuples(
        st.just("program"),
        st.integers(0, BLOCKS - 1),
        st.integers(0, BS - 1),
        st.binary(min_size=1, max_size=600),
    ),
    st.tuples(st.just("erase"), st.integers(0, BLOCKS - 1), st.just(0), st.just(b"")),
)


def _apply(dev: FlashSim, model: Model, kind: str, block: int, offset: int, data: bytes) -> None:
    if kind == "erase":
        dev.ioctl(6, block)
        model.erase(block)
        return
    addr = block * BS + offset
    if addr + len(data) > SIZE:
        try:
            dev.writeblocks(block, data, offset)
        except ValueError:
            return
        raise AssertionError("a program past the end of flash was accepted")
    try:
        model.program(addr, data)
    except ValueError:
        try:
            dev.writeblocks(block, data, offset)
        except ValueError:
            return
        raise AssertionError("a 0-to-1 program was accepted") from None
    dev.writeblocks(block, data, offset)


def _devices(folder) -> list[FlashSim]:  # type: ignore[no-untyped-def]
    """The same chip twice: in RAM and in an image file."""
    path = str(folder / ("model-%d.img" % next(_names)))
    return [
        FlashSim(block_size=BS, block_count=BLOCKS),
        FlashSim(path=path, block_size=BS, block_count=BLOCKS),
    ]


def _image(dev: FlashSim) -> bytes:
    buf = bytearray(SIZE)
    dev.readblocks(0, buf)
    return bytes(buf)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(op, max_size=25))
def test_simulator_matches_the_model(tmp_path_factory, ops) -> None:  # type: ignore[no-untyped-def]
    for dev in _devices(tmp_path_factory.mktemp("flash")):
        model = Model()
        for step in ops:
            _apply(dev, model, *step)
        assert _image(dev) == bytes(model.img)
        assert (dev.bytes_programmed, dev.blocks_erased, dev.ops) == (
            model.programmed,
            model.erased,
            model.ops,
        )
        dev.close()


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(op, min_size=1, max_size=15),
    cut=st.integers(1, 15),
    landed=st.one_of(st.none(), st.integers(0, 700)),
)
def test_torn_op_leaves_the_models_prefix(tmp_path_factory, ops, cut, landed) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("flash")
    path = str(folder / "cut.img")
    dev = FlashSim(path=path, block_size=BS, block_count=BLOCKS)
    dev.cut_after(cut, landed)
    model = Model()
    torn = False
    for kind, block, offset, data in ops:
        if model.ops + 1 == cut and not _refused(model, kind, block, offset, data):
            if kind == "erase":
                model.erase(block, BS // 3 if landed is None else min(landed, BS - 1))
                call = (dev.ioctl, 6, block)
            else:
                share = len(data) // 2 if landed is None else min(landed, len(data) - 1)
                model.program(block * BS + offset, data, share)
                call = (dev.writeblocks, block, data, offset)
            try:
                call[0](*call[1:])
            except PowerCut:
                torn = True
            assert torn, "the armed op was not cut"
            break
        _apply(dev, model, kind, block, offset, data)
    if torn:
        try:
            dev.readblocks(0, bytearray(1))
        except PowerCut:
            pass
        else:
            raise AssertionError("the chip still answers after the cut")
    dev.close()
    rebooted = FlashSim(path=path, block_size=BS, block_count=BLOCKS)
    assert _image(rebooted) == bytes(model.img)
    rebooted.close()


def _refused(model: Model, kind: str, block: int, offset: int, data: bytes) -> bool:
    """True when this op would be refused (and so is not an operation that can be cut)."""
    if kind == "erase":
        return False
    addr = block * BS + offset
    if addr + len(data) > SIZE:
        return True
    old = model.img[addr : addr + len(data)]
    return any(d & ~o & 0xFF for d, o in zip(data, old, strict=True))
