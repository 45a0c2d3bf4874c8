# The firmware's crypto in C (board/cmodules/doorcrypto): aes128 (AES-128 CBC) and hmacsha256
# (HMAC-SHA256), their key schedules and hash states on the C stack, no heap object per key.
# The sources are named by their absolute paths: MicroPython puts a module's object at
# $(BUILD)/ + its path relative to USER_C_MODULES, and a path with ".." there left $(BUILD),
# so the unix32 and mcu builds wrote one object file between them.
DOORCRYPTO_DIR := $(abspath $(USERMOD_DIR)/../../../cmodules/doorcrypto)
SRC_USERMOD_C += $(DOORCRYPTO_DIR)/modaes128.c
SRC_USERMOD_C += $(DOORCRYPTO_DIR)/modhmacsha256.c
