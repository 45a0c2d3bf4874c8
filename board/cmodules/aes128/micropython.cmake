# The aes128 module for CMake ports (the ESP32 image: ESP-IDF's Mbed TLS provides the cipher).
add_library(usermod_aes128 INTERFACE)
target_sources(usermod_aes128 INTERFACE ${CMAKE_CURRENT_LIST_DIR}/modaes128.c)
target_include_directories(usermod_aes128 INTERFACE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(usermod INTERFACE usermod_aes128)
