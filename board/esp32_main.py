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
try:
    from board.esp32_ref import main
except ImportError as e:
    print("doorctl: firmware not deployed (", e, "): run doorctl deploy")
else:
    main()
