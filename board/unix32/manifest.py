# The 32-bit virtual board (`doorctl build unix32`): the unix port's standard modules, what
# board/virtual.py declares (via the shared ../manifest.py), the launcher's boot script
# (board/vdev/boot.py) and the `machine` whose reset() reboots the process. The image is also what the device tests run
# on, so every other board module comes along: `board` is then one package whose every module
# imports from the image. Paths are relative to this folder.
import os

include("$(PORT_DIR)/variants/standard/manifest.py")
include("../manifest.py", board="virtual",
        extra=[d + f for d in ("board/", "board/vdev/") for f in os.listdir("../../" + d)
               if f.endswith(".py") and f != "manifest.py"])
module("machine.py", base_path="../vdev/lib")
