# The C modules every CMake-built image of the firmware takes (the ESP32's: board/esp32).
# Make-built images (unix32, mcu) name them from their own cmodules folders.
include(${CMAKE_CURRENT_LIST_DIR}/doorcrypto/micropython.cmake)
