# aes128 (board/cmodules/aes128/modaes128.c): AES-128 CBC with the key schedule on the C
# stack, no heap object per key. The source is named by its absolute path: MicroPython puts a
# module's object at $(BUILD)/ + its path relative to USER_C_MODULES, and a path with ".."
# there left $(BUILD), so the unix32 and mcu builds wrote one object file between them.
SRC_USERMOD_C += $(abspath $(USERMOD_DIR)/../../../cmodules/aes128/modaes128.c)
