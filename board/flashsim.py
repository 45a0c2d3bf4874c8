"""NOR-flash simulator: a block device that obeys the rules real NOR flash imposes.

Runs under MicroPython (the virtual board, device tests) and CPython (host tests,
benchmarks). Rules enforced, as on a real SPI NOR chip:

- erase works on whole erase blocks and sets every byte to 0xFF;
- programming can only clear bits: writing a 1 where the flash holds a 0 is refused
  (ValueError), because real flash would silently keep the 0;
- counters record bytes programmed and read, blocks erased and operations, so write
  amplification can be measured rather than guessed;
- `cut_after(n)` simulates a power cut: the n-th program/erase from now is torn (only part of
  it reaches the flash) and raises PowerCut; every later operation raises PowerCut too,
  until the image is opened again ("reboot").

With a `path`, every program and erase is written through to that file at once, so killing
the process keeps exactly what reached the "chip".

With a path, the image is never held in RAM (the virtual device runs in a 64 KiB heap).
The data path allocates only small memoryview slices: littlefs may call block methods with
the heap locked when a file is finalised by the garbage collector, so firmware code always
closes its files explicitly (`with open(...)`).
"""

_ERASED = 0xFF
_CHUNK = 256


class PowerCut(Exception):
    pass


class FlashSim:
    def __init__(self, path=None, block_size=4096, block_count=512, cut_after=None):
        if block_size % _CHUNK and _CHUNK % block_size:
            raise ValueError("block_size must divide or be a multiple of 256")
        self.block_size = block_size
        self.block_count = block_count
        self.size = block_size * block_count
        self.path = path
        self.bytes_programmed = 0
        self.bytes_read = 0
        self.blocks_erased = 0
        self.ops = 0
        self._cut_in = 0  # 0 = not armed; else ops left until the torn one
        self._dead = False
        self._scratch = bytearray(_CHUNK)
        self._ff = b"\xff" * _CHUNK
        self._file = None
        self._img = None
        if path is None:
            # RAM only: for small test devices (the image lives in the heap).
            self._img = bytearray(self.size)
            mv = memoryview(self._img)
            for a in range(0, self.size, _CHUNK):
                k = min(_CHUNK, self.size - a)
                mv[a : a + k] = self._ff[:k]
        else:
            # File-backed: the image never sits in RAM, so a large chip fits a small heap.
            self._open_image(path)
        if cut_after is not None:
            self.cut_after(cut_after)

    def _open_image(self, path):
        try:
            f = open(path, "r+b")
            f.seek(0, 2)
            have = f.tell()
        except OSError:
            f = open(path, "w+b")
            have = 0
        self._file = f
        addr = have - have % _CHUNK
        while addr < self.size:
            n = min(_CHUNK, self.size - addr)
            f.seek(addr)
            f.write(self._ff[:n] if n < _CHUNK else self._ff)
            addr += n
        f.flush()

    # -- storage (RAM or file) ------------------------------------------------------------

    def _load(self, addr, buf):
        if self._file is not None:
            self._file.seek(addr)
            self._file.readinto(buf)
        else:
            buf[:] = memoryview(self._img)[addr : addr + len(buf)]

    def _store(self, addr, data):
        if self._file is not None:
            self._file.seek(addr)
            self._file.write(data)
            self._file.flush()
        else:
            memoryview(self._img)[addr : addr + len(data)] = data

    # -- power cuts ------------------------------------------------------------------

    def cut_after(self, n):
        """Arm a power cut: the n-th program/erase from now is torn (n >= 1)."""
        if n < 1:
            raise ValueError("cut_after needs n >= 1")
        self._cut_in = n

    def _begin_op(self):
        """Count a mutating op; True when this op is the one to tear."""
        if self._dead:
            raise PowerCut("flash has no power")
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
            raise ValueError("block out of range")
        addr = block * self.block_size + offset
        if offset < 0 or addr + length > self.size:
            raise ValueError("access beyond the end of flash")
        return addr

    def read(self, addr, buf):
        if addr < 0 or addr + len(buf) > self.size:
            raise ValueError("access beyond the end of flash")
        if self._dead:
            raise PowerCut("flash has no power")
        self._load(addr, buf)
        self.bytes_read += len(buf)

    def program(self, addr, data):
        """Program `data` at `addr`: bits can only go from 1 to 0."""
        n = len(data)
        if addr < 0 or addr + n > self.size:
            raise ValueError("access beyond the end of flash")
        data = memoryview(data)
        cur = memoryview(self._scratch)
        # Check the whole range first: a refused program changes nothing.
        done = 0
        while done < n:
            k = min(_CHUNK, n - done)
            self._load(addr + done, cur[:k])
            for i in range(k):
                if data[done + i] & ~cur[i] & 0xFF:
                    raise ValueError("program would set a 0 bit to 1: erase first")
            done += k
        torn = self._begin_op()
        limit = n // 2 if torn else n
        done = 0
        while done < limit or (torn and done == limit and done < n):
            k = min(_CHUNK, limit - done) if done < limit else 1
            self._load(addr + done, cur[:k])
            if done < limit:
                for i in range(k):
                    cur[i] &= data[done + i]
            else:
                # The byte being written when power went is left half-programmed.
                cur[0] &= data[done] | 0x0F
            self._store(addr + done, cur[:k])
            self.bytes_programmed += k
            done += k
        if torn:
            raise PowerCut("power cut while programming")

    def erase(self, block):
        addr = self._check(block, 0, self.block_size)
        torn = self._begin_op()
        size = self.block_size // 3 if torn else self.block_size
        done = 0
        while done < size:
            k = min(_CHUNK, size - done)
            self._store(addr + done, self._ff[:k] if k < _CHUNK else self._ff)
            done += k
        self.blocks_erased += 1
        if torn:
            raise PowerCut("power cut while erasing")

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
        if self._file is not None:
            self._file.close()
            self._file = None


def mount(dev, mount_point, mkfs_if_needed=True):
    """Mount littlefs (v2) on `dev` at `mount_point`; format it first if it does not mount."""
    import vfs

    try:
        fs = vfs.VfsLfs2(dev)
    except OSError:
        if not mkfs_if_needed:
            raise
        vfs.VfsLfs2.mkfs(dev)
        fs = vfs.VfsLfs2(dev)
    vfs.mount(fs, mount_point)
    return fs
