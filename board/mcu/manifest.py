# The bare-metal board (`doorctl build mcu`: MicroPython's qemu port, MPS2-AN385, Cortex-M3):
# what board/mcu_qemu.py declares (via the shared ../manifest.py). No uplink modules are needed
# here (the port has no network), but the application is frozen whole, as on every board.
# The flash simulator comes along for the tests run on this board (tests/device, tests/shared).
include("../manifest.py", board="mcu_qemu", extra=("board/vdev/__init__.py", "board/vdev/flashsim.py",
                                                       "board/vdev/flashsim_py.py"))
# The port has no C `_asyncio`: asyncio's pure-Python task queue comes along.
package("asyncio", ("task.py",), base_path="$(MPY_DIR)/extmod", opt=3)
