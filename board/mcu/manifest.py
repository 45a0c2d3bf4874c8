# The bare-metal board (`doorctl build mcu`: MicroPython's qemu port, MPS2-AN385, Cortex-M3):
# the shared application manifest and this board's module. No uplink modules are needed here
# (the port has no network), but the application is frozen whole, as on every board.
include("../manifest.py")
# The port has no C `_asyncio`: asyncio's pure-Python task queue comes along.
package("asyncio", ("task.py",), base_path="$(MPY_DIR)/extmod", opt=3)
package("board", files=["__init__.py", "interface.py", "mcu_qemu.py", "flashsim.py"], base_path="../..")
