# The door firmware image for the ESP32 reference board: the port's own modules, what
# board/esp32_ref.py declares (its packages, board files and boot entry, via the shared
# ../manifest.py), and a frozen main.py that starts it, so the board runs the door firmware at
# boot with nothing on its filesystem but the door's data. Paths are relative to this folder.
include("$(PORT_DIR)/boards/manifest.py")
include("../manifest.py", board="esp32_ref")

module("main.py")
