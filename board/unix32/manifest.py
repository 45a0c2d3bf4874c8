# The 32-bit virtual board (`doorctl build unix32`): the unix port's standard modules, the
# shared application manifest, and the virtual board's own modules (simulated flash, raw
# REPL, ROM partitions, and the `machine` whose reset() reboots the process).
include("$(PORT_DIR)/variants/standard/manifest.py")
include("../manifest.py")

package(
    "board",
    files=["__init__.py", "virtual.py", "flashsim.py", "rawrepl.py", "romfs.py", "vdev_rom.py",
           "vdev_boot.py"],
    base_path="../..",
)
module("machine.py", base_path="../vdev_lib")
