# The virtual board's drivers in C, built into the unix32 image only (`doorctl build unix32`):
# on the ESP32 the same jobs are done by C drivers (esp32.Partition, machine.UART) that take
# nothing from the MicroPython heap, so the 32-bit image measures the board the product has.
# board/vdev/flashsim.py chooses this module when it is there; the Python implementation
# (board/vdev/flashsim_py.py) stays for CPython, the 64-bit PyPI interpreter and the tests.
VBOARD_MOD_DIR := $(USERMOD_DIR)

SRC_USERMOD_C += $(VBOARD_MOD_DIR)/modvboard.c $(VBOARD_MOD_DIR)/modlinks.c
