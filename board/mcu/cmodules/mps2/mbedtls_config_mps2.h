// Mbed TLS configuration for the door firmware's bare-metal build: AES (cryptolib) and
// SHA-256 (hashlib) only. The door's TLS uplink is not part of this build.
#ifndef MBEDTLS_CONFIG_MPS2_H
#define MBEDTLS_CONFIG_MPS2_H

#define MBEDTLS_AES_C
#define MBEDTLS_AES_ROM_TABLES          // tables in flash, not 8 KiB of RAM
#define MBEDTLS_CIPHER_MODE_CBC
#define MBEDTLS_SHA256_C
#define MBEDTLS_DEPRECATED_REMOVED

#endif
