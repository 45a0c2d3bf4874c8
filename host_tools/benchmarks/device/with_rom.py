# Runs a device script with the application's bytecode from a ROMFS image, as a board whose
# ROM partition holds it (board/romfs.py); the unix port has no memory-mapped flash, so the
# image sits in one heap block of exactly its size (reported, so it can be told apart):
#   micropython with_rom.py IMAGE SCRIPT [ARGS...]
import gc
import sys

import vfs

with open(sys.argv[1], "rb") as f:
    image = f.read()
vfs.mount(vfs.VfsRom(image), "/rom")
sys.path.insert(0, "/rom")
print("ROM_BYTES", len(image))
script = sys.argv[2]
del sys.argv[:2]
with open(script) as f:
    source = f.read()
code = compile(source, script, "exec")
del source
gc.collect()
exec(code, {"__name__": "__main__"})
