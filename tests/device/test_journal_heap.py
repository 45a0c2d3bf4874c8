# mpy-heapsize: 128K
# The journal's RAM on the virtual board's partition (395 data sectors): one number per sector
# (each sector's first sequence number), not a second table of sector sequences beside it
# (docs/journal.md, "Boot"): 1.6 KiB less on the 32-bit image. (128K: board.virtual is compiled
# from source beside it.)
import gc
import sys

from board.virtual import JOURNAL_BLOCKS
from board.vdev.flashsim import FlashSim
from firmware.journal import Journal
from tests.scratch import scratch_path


def test_the_journal_keeps_one_number_per_data_sector_in_ram():
    dev = FlashSim(path=scratch_path("journal-heap.img"), block_size=4096, block_count=JOURNAL_BLOCKS)
    j = Journal(dev)
    j.append(1, 0, 0, 0, 0, 0)
    j = None
    gc.collect()
    before = gc.mem_alloc()
    j = Journal(dev)
    gc.collect()
    used = gc.mem_alloc() - before
    slot = 4 if sys.maxsize < 2**32 else 8  # a list slot: a pointer or a small int
    table = j.n_data * slot
    assert table <= used < table * 3 // 2, (used, table)
    dev.close()
