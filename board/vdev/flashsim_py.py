"""NOR-flash simulator in Python: a block device that obeys the rules real NOR flash imposes.

Import it through board.vdev.flashsim, which takes the C type of the unix32 image
(board/unix32/cmodules/vboard, the same API and rules) when it is there and this class otherwise.

Runs under MicroPython (the virtual board, device tests) and CPython (host tests,
benchmarks). Rules enforced, as on a real SPI NOR chip:

- erase works on whole erase blocks and sets every byte to 0xFF;
- programming can only clear bits: writing a 1 where the flash holds a 0 is refused
  (ValueError), because real flash would silently keep the 0;
- counters record bytes programmed and read, blocks erased and operations, so write
  amplification can be measured rather than guessed;
- `cut_after(n, landed=None)` simulates a power cut: the n-th program/erase from now is torn
  (only part of it reaches the flash) and raises PowerCut; every later operation raises
  PowerCut too, until the image is opened again ("reboot").

With a `path`, every program and erase is written through to that file at once (unbuffered
writes, no fsync: the kernel keeps them when the process is killed), so killing the process
keeps exactly what reached the "chip". `close()` is a power-off: later operations raise
PowerCut.

With a path, the image is never held in RAM (the virtual device runs in a small heap).
littlefs may call the block methods with the heap locked, so the data path never allocates:
it moves whole 256-byte windows through one preallocated scratch buffer, and its errors
fall back to preallocated exception instances when the heap is locked (raising a new one
would turn into MemoryError).

littlefs does not convert an exception raised by a block method: it unwinds straight through
the filesystem code to the Python caller of open/write/close/rename, and the mounted
filesystem must be treated as lost until it is mounted again (docs/flash-simulator.md).
"""

_CHUNK = 256
# Literals, not `b"\xff" * 256`: a literal is frozen into the image (no heap); one erased
# window serves every chip.
_FF = (
      b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
      b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
      b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
      b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
      b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
      b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
      b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
      b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
)


class PowerCut(Exception):
    """The simulated chip lost power during, or before, this operation."""


# The one window every chip moves its data through: the block methods never await or call
# each other, so chips can share it (each had its own: 256 bytes of heap per chip).
_SCRATCH = bytearray(_CHUNK)

# Raised instead of a fresh instance when the heap is locked (see the module docstring).
_NO_POWER = PowerCut("flash has no power")
_BAD_PROGRAM = ValueError("program would set a 0 bit to 1: erase first")
_OUT_OF_RANGE = ValueError("access beyond the end of flash")


def _fail(cls, msg, fallback):
    try:
        err = cls(msg)
    except MemoryError:
        err = fallback
    raise err


class FlashSim:
    def __init__(self, path=None, block_size=4096, block_count=512, cut_after=None):
        if block_size % _CHUNK:
            raise ValueError("block_size must be a multiple of 256")
        self.block_size = block_size
        self.block_count = block_count
        self.size = block_size * block_count
        self.path = path
        self.bytes_programmed = 0
        self.bytes_read = 0
        self.blocks_erased = 0
        self.ops = 0
        self._cut_in = 0  # 0 = not armed; else ops left until the torn one
        self._landed = None  # bytes of the torn op that land (None: the default share)
        self._dead = False
        self._file = None
        self._img = None
        self._imv = None
        if path is None:
            # RAM only: for small test devices (the image lives in the heap).
            self._img = bytearray(self.size)
            self._imv = memoryview(self._img)
            for base in range(0, self.size, _CHUNK):
                self._imv[base : base + _CHUNK] = _FF
        else:
            # File-backed: the image never sits in RAM, so a large chip fits a small heap.
            self._open_image(path)
        if cut_after is not None:
            self.cut_after(cut_after)

    def _open_image(self, path):
        # Unbuffered: each write reaches the kernel at once without a flush (a flush on the
        # unix port is an fsync, far too slow per program).
        try:
            f = open(path, "r+b", buffering=0)
            f.seek(0, 2)
            have = f.tell()
        except OSError:
            f = open(path, "w+b", buffering=0)
            have = 0
        self._file = f
        addr = have - have % _CHUNK
        while addr < self.size:
            f.seek(addr)
            f.write(_FF)
            addr += _CHUNK

    # -- storage (RAM or file) ------------------------------------------------------------
    # No allocation on this path (see the module docstring): whole 256-byte windows are read
    # into and written from one preallocated scratch buffer.

    def _load(self, addr, buf):
        if self._file is not None:
            self._file.seek(addr)
            self._file.readinto(buf)
        else:
            img = self._img
            for i in range(len(buf)):
                buf[i] = img[addr + i]

    def _window_in(self, base):
        if self._file is not None:
            self._file.seek(base)
            self._file.readinto(_SCRATCH)
        else:
            img, sc = self._img, _SCRATCH
            for i in range(_CHUNK):
                sc[i] = img[base + i]

    def _window_out(self, base):
        if self._file is not None:
            self._file.seek(base)
            self._file.write(_SCRATCH)
        else:
            self._imv[base : base + _CHUNK] = _SCRATCH  # a slice store does not allocate

    # -- power cuts ------------------------------------------------------------------

    def cut_after(self, n, landed=None):
        """Arm a power cut: the n-th program/erase from now is torn (n >= 1).

        `landed` is how many bytes of the torn op reach the flash (at most all but one): a
        program lands that prefix plus one half-programmed byte, an erase clears that prefix
        of the block. None: half of a program, a third of an erase.
        """
        if n < 1:
            raise ValueError("cut_after needs n >= 1")
        if landed is not None and landed < 0:
            raise ValueError("landed must be >= 0")
        self._cut_in = n
        self._landed = landed

    def _torn_share(self, n, default):
        if self._landed is None:
            return default
        return max(0, min(self._landed, n - 1))

    def _begin_op(self):
        """Count a mutating op; True when this op is the one to tear."""
        if self._dead:
            _fail(PowerCut, "flash has no power", _NO_POWER)
        self.ops += 1
        if self._cut_in:
            self._cut_in -= 1
            if self._cut_in == 0:
                self._dead = True
                return True
        return False

    # -- primitive operations ----------------------------------------------------------

    def _check(self, block, offset, length):
        if block < 0 or block >= self.block_count:
            _fail(ValueError, "block out of range", _OUT_OF_RANGE)
        addr = block * self.block_size + offset
        if offset < 0 or addr + length > self.size:
            _fail(ValueError, "access beyond the end of flash", _OUT_OF_RANGE)
        return addr

    def read(self, addr, buf):
        if addr < 0 or addr + len(buf) > self.size:
            _fail(ValueError, "access beyond the end of flash", _OUT_OF_RANGE)
        if self._dead:
            _fail(PowerCut, "flash has no power", _NO_POWER)
        self._load(addr, buf)
        self.bytes_read += len(buf)

    def program(self, addr, data):
        """Program `data` at `addr`: bits can only go from 1 to 0."""
        n = len(data)
        if addr < 0 or addr + n > self.size:
            _fail(ValueError, "access beyond the end of flash", _OUT_OF_RANGE)
        if self._dead:
            _fail(PowerCut, "flash has no power", _NO_POWER)
        sc = _SCRATCH
        # Check the whole range first: a refused program changes nothing.
        base = addr - addr % _CHUNK
        while base < addr + n:
            self._window_in(base)
            lo = max(addr, base)
            hi = min(addr + n, base + _CHUNK)
            for a in range(lo, hi):
                if data[a - addr] & ~sc[a - base] & 0xFF:
                    _fail(ValueError, "program would set a 0 bit to 1: erase first", _BAD_PROGRAM)
            base += _CHUNK
        torn = self._begin_op()
        limit = addr + (self._torn_share(n, n // 2) if torn else n)
        base = addr - addr % _CHUNK
        while base < limit or (torn and base <= limit < addr + n):
            self._window_in(base)
            lo = max(addr, base)
            hi = min(limit, base + _CHUNK)
            for a in range(lo, hi):
                sc[a - base] &= data[a - addr]
            if torn and base <= limit < base + _CHUNK and limit < addr + n:
                # The byte being written when power went is left half-programmed.
                sc[limit - base] &= data[limit - addr] | 0x0F
            self._window_out(base)
            base += _CHUNK
        self.bytes_programmed += (limit - addr) + (1 if torn and limit < addr + n else 0)
        if torn:
            _fail(PowerCut, "power cut while programming", _NO_POWER)

    def erase(self, block):
        addr = self._check(block, 0, self.block_size)
        torn = self._begin_op()
        bs = self.block_size
        end = addr + (self._torn_share(bs, bs // 3) if torn else bs)
        sc = _SCRATCH
        base = addr
        while base < end:
            if end - base >= _CHUNK:
                sc[0:_CHUNK] = _FF
            else:
                self._window_in(base)
                for i in range(end - base):
                    sc[i] = 0xFF
            self._window_out(base)
            base += _CHUNK
        self.blocks_erased += 1
        if torn:
            _fail(PowerCut, "power cut while erasing", _NO_POWER)

    # -- littlefs / MicroPython block protocol ----------------------------------------

    def readblocks(self, block, buf, offset=0):
        self.read(self._check(block, offset, len(buf)), buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            # Simple protocol: whole blocks, erase then program.
            nblocks = len(buf) // self.block_size
            self._check(block, 0, len(buf))
            mv = memoryview(buf)
            for k in range(nblocks):
                self.erase(block + k)
                start = k * self.block_size
                self.program((block + k) * self.block_size, mv[start : start + self.block_size])
            return 0
        self.program(self._check(block, offset, len(buf)), buf)
        return 0

    def ioctl(self, op, arg):
        if op == 4:
            return self.block_count
        if op == 5:
            return self.block_size
        if op == 6:
            self.erase(arg)
            return 0
        if op in (1, 2, 3):
            return 0
        return None

    def close(self):
        """Power off: the image file is closed and every later operation raises PowerCut."""
        self._dead = True
        if self._file is not None:
            self._file.close()
            self._file = None

