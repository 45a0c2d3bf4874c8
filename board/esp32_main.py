# main.py of the ESP32 reference board, written by `doorctl deploy`.
#
# MicroPython's boot code has already mounted littlefs (the "vfs" partition) at / and put
# /lib on sys.path. This builds the board and runs the firmware. Hold the REX button while
# the board powers up to stay at the REPL instead (safe mode, for recovery).
try:
    from board.esp32_ref import main
except ImportError as e:
    print("doorctl: firmware not deployed (", e, "): run doorctl deploy")
else:
    main()
