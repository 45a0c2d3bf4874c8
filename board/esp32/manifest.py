# The door firmware image for the ESP32 reference board: the port's own modules, the shared
# application manifest (firmware, crypto, offline_cache, asyncio), the board package
# (board/esp32_ref.py, board/romfs.py, board/esp32_main.py) and a frozen main.py that starts
# it, so the board runs the door firmware at boot with nothing on its filesystem but the
# door's data. Paths are relative to this folder.
include("$(PORT_DIR)/boards/manifest.py")
include("../manifest.py")

package("board", files=["__init__.py", "interface.py", "esp32_ref.py", "esp32_main.py", "romfs.py"], base_path="../..")
module("main.py")
