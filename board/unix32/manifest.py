# The 32-bit virtual board (`doorctl build unix32`): the unix port's standard modules, the
# shared application manifest, and the board package (the virtual board's simulated flash,
# raw REPL and ROM partitions, and the other boards' modules, so that `board` is one package
# whose every module imports from the image), plus the `machine` whose reset() reboots the
# process. Paths are relative to this folder.
import os

include("$(PORT_DIR)/variants/standard/manifest.py")
include("../manifest.py")

package(
    "board",
    files=sorted(f for f in os.listdir("..") if f.endswith(".py") and f != "manifest.py"),
    base_path="../..",
)
module("machine.py", base_path="../vdev_lib")
