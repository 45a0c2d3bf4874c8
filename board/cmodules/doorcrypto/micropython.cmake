# The firmware's crypto in C for CMake ports (the ESP32 image: ESP-IDF's Mbed TLS provides the
# cipher and the hash): aes128 and hmacsha256.
add_library(usermod_doorcrypto INTERFACE)
target_sources(usermod_doorcrypto INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/modaes128.c
    ${CMAKE_CURRENT_LIST_DIR}/modhmacsha256.c
)
target_include_directories(usermod_doorcrypto INTERFACE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(usermod INTERFACE usermod_doorcrypto)
