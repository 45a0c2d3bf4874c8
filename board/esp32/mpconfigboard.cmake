# The door controller's ESP32 reference board (docs/hardware.md, docs/deploy.md):
#   make -C $MICROPY_SRC/ports/esp32 BOARD_DIR=$PWD/board/esp32
# (ESP-IDF v5.5.1 in the environment; the image is build-esp32/firmware.bin).
set(IDF_TARGET esp32)

# The repository's partition table: sdkconfig cannot name a path outside the port, so a
# fragment with its absolute path is written into the build folder at configure time.
set(DOORCTL_PARTITIONS ${MICROPY_BOARD_DIR}/../esp32_partitions.csv)
file(WRITE ${CMAKE_BINARY_DIR}/sdkconfig.doorctl_partitions
    "CONFIG_PARTITION_TABLE_CUSTOM=y\nCONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"${DOORCTL_PARTITIONS}\"\n")

set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    ${MICROPY_BOARD_DIR}/sdkconfig.board
    ${CMAKE_BINARY_DIR}/sdkconfig.doorctl_partitions
)

# What is frozen: the shared application manifest and the board's own modules.
set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)

# The firmware's own C modules (board/cmodules/doorcrypto: aes128 and hmacsha256, no heap
# object per key), unless the make line names others.
if(NOT USER_C_MODULES)
    set(USER_C_MODULES ${MICROPY_BOARD_DIR}/../cmodules/micropython.cmake)
endif()
