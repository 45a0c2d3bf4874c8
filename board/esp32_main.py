# main.py of the ESP32 reference board, written by `doorctl deploy`.
#
# MicroPython's boot code has already mounted littlefs (the "vfs" partition) at / and put
# /lib on sys.path; a build with a ROM partition has mounted its ROMFS image at /rom too.
# The image is trusted only when it matches the record `doorctl deploy --romfs` wrote after
# proving it (board/romfs.py, from /lib); otherwise the firmware runs from the files in /lib.
# This builds the board and runs the firmware. Hold the REX button while the board powers up
# to stay at the REPL instead (safe mode, for recovery).
try:
    from board import romfs
except ImportError:
    romfs = None
if romfs is not None:
    def _partition(n):
        try:
            import vfs

            image = vfs.rom_ioctl(2, n)  # memory-mapped flash, or a negative errno
        except (AttributeError, OSError):
            return None
        return None if isinstance(image, int) else image

    _image, _why = romfs.adopt(_partition, romfs.RECORD)
    if _why is not None and not _why.startswith("no rom.json"):
        print("doorctl: not running from /rom:", _why)
# Safe mode: firmware that does not import (a deploy cut half-way) or stops leaves the REPL
# up with one status line, so `doorctl deploy` can always be run again.
try:
    from board.esp32_ref import main
except ImportError as e:
    print("doorctl: safe mode: firmware not deployed or incomplete (", e, "): run doorctl deploy")
except Exception as e:  # noqa: BLE001  a torn module raises ValueError, SyntaxError, ...
    print("doorctl: safe mode: deployed firmware does not import (", repr(e), "): run doorctl deploy")
else:
    try:
        main()
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001
        print("doorctl: safe mode: the firmware stopped (", repr(e), "): REPL for recovery")
