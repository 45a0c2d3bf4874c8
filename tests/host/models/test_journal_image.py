"""The host's journal image reader (host_tools/journal_image.py) reads the same bounds the
door's journal boots with, whatever the door did to the flash: appends, acknowledgements that
free sectors, a ring that wraps and loses records, idle erases and a power cut anywhere."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from board.vdev.flashsim import FlashSim, PowerCut
from firmware.journal import Journal
from host_tools.journal_image import bounds

BLOCKS = 6  # 4 data sectors of 127 records: a ring that wraps within an example

ops = st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 300)),
                         st.tuples(st.just("ack"), st.integers(0, 2000)),
                         st.tuples(st.just("maintain"), st.just(0)),
                         st.tuples(st.just("reboot"), st.just(0))),
               max_size=12)


@settings(max_examples=40, deadline=None)
@given(ops, st.one_of(st.none(), st.integers(1, 900)))
def test_bounds_match_what_the_journal_boots_with(steps: list[tuple[str, int]], cut: int | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "journal.img"
        dev = FlashSim(path=str(image), block_size=4096, block_count=BLOCKS)
        if cut is not None:
            dev.cut_after(cut)
        j = Journal(dev)
        try:
            for op, n in steps:
                if op == "append":
                    for i in range(n):
                        j.append(1, 1, 0, i, 0, i, b"ab")
                elif op == "ack":
                    j.ack(n)
                elif op == "maintain":
                    j.maintain()
                else:
                    j = Journal(dev)
        except PowerCut:
            pass
        dev.close()
        found = bounds(image)
        # Read before the firmware boots on it: its boot may add a GAP record (a hole found).
        booted = Journal(FlashSim(path=str(image), block_size=4096, block_count=BLOCKS))
        if booted.lost:
            assert found[0] == booted.oldest_seq()
            assert found[1] <= booted.next_seq - 1
        else:
            assert found == (booted.oldest_seq(), booted.next_seq - 1)


def test_an_empty_partition_holds_nothing() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "journal.img"
        FlashSim(path=str(image), block_size=4096, block_count=BLOCKS).close()
        assert bounds(image) == (1, 0)


def test_a_written_journal_reads_back_its_numbers() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "journal.img"
        dev = FlashSim(path=str(image), block_size=4096, block_count=BLOCKS)
        j = Journal(dev)
        for i in range(400):  # past three sectors
            j.append(1, 0, 0, i, 0, 0)
        j.ack(300)
        j.maintain()
        for i in range(100):  # into the freed sector
            j.append(1, 0, 0, i, 0, 0)
        dev.close()
        assert bounds(image) == (j.oldest_seq(), 500)
        assert bounds(image)[0] > 1  # the first sector went once acknowledged
