# The door firmware's additions to MicroPython's qemu port (board MPS2_AN385), as a user C
# module, so the vendored port is built unedited:
#   - cryptolib and SHA-256 from Mbed TLS's aes.c/sha256.c/platform_util.c (the stock port
#     has no cryptolib);
#   - os.urandom over the port's mp_hal_get_random: a fixed-seed generator (the MPS2 has no
#     entropy source), so runs repeat exactly; a test board's, not a product's;
#   - mp_hal_time_ns, which littlefs (MICROPY_VFS_LFS2=1 on the make line) needs for mtimes;
#   - the `mps2` module: a flash block device in the board's PSRAM, an exact instruction
#     counter and an exit with a status;
#   - a linker wrap of pyexec_friendly_repl that runs a script loaded into memory from reset,
#     with no console input, so instruction counts repeat exactly.
MPS2_MOD_DIR := $(USERMOD_DIR)
MBEDTLS_LIB := $(TOP)/lib/mbedtls/library

SRC_USERMOD_C += $(MPS2_MOD_DIR)/modmps2.c $(MPS2_MOD_DIR)/script_boot.c
SRC_USERMOD_LIB_C += $(MBEDTLS_LIB)/aes.c $(MBEDTLS_LIB)/sha256.c $(MBEDTLS_LIB)/platform_util.c

CFLAGS_USERMOD += -I$(MPS2_MOD_DIR) -I$(TOP)/lib/mbedtls/include
CFLAGS_USERMOD += -DMBEDTLS_CONFIG_FILE='"mbedtls_config_mps2.h"'
CFLAGS_USERMOD += -DMICROPY_PY_CRYPTOLIB=1 -DMICROPY_SSL_MBEDTLS=1 -DMICROPY_PY_OS_URANDOM=1
LDFLAGS_USERMOD += -Wl,--wrap=pyexec_friendly_repl
