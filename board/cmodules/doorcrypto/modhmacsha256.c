// hmacsha256: HMAC-SHA256 (RFC 2104) in one call, its two SHA-256 states on the C stack.
//
// Why: over hashlib, an HMAC made two 116-byte SHA-256 objects, a 64-byte outer pad kept
// until the digest, and temporaries for the pads, for every whitelist chunk the door takes
// (wire/common.py cache_chunk_tag) and every command or time message it checks. At a small
// heap those were the requests a busy door's fragmented heap failed (docs/architecture.md).
// Here a call takes only its 32-byte result from the heap.
//
// hmacsha256.digest(key, data, more=b"") -> bytes: HMAC-SHA256(key, data || more); `more`
// spares the caller a concatenation (a 2 KiB chunk behind a short prefix).

#include <string.h>

#include "py/runtime.h"
#include "mbedtls/sha256.h"

static void hmacsha256_wipe(void *p, size_t n) {
    volatile unsigned char *v = p;  // not optimised away: the key's pads live here
    while (n--) {
        *v++ = 0;
    }
}

static mp_obj_t hmacsha256_digest(size_t n_args, const mp_obj_t *args) {
    mp_buffer_info_t key, data, more = { .buf = NULL, .len = 0 };
    mp_get_buffer_raise(args[0], &key, MP_BUFFER_READ);
    mp_get_buffer_raise(args[1], &data, MP_BUFFER_READ);
    if (n_args > 2) {
        mp_get_buffer_raise(args[2], &more, MP_BUFFER_READ);
    }
    unsigned char k[64], pad[64], inner[32];
    mbedtls_sha256_context ctx;
    memset(k, 0, sizeof(k));
    mbedtls_sha256_init(&ctx);
    int rc = 0;
    if (key.len > 64) {  // a long key is hashed first (RFC 2104)
        rc = mbedtls_sha256(key.buf, key.len, k, 0);
    } else {
        memcpy(k, key.buf, key.len);
    }
    for (int i = 0; i < 64; i++) {
        pad[i] = k[i] ^ 0x36;
    }
    rc = rc ? rc : mbedtls_sha256_starts(&ctx, 0);
    rc = rc ? rc : mbedtls_sha256_update(&ctx, pad, 64);
    rc = rc ? rc : mbedtls_sha256_update(&ctx, data.buf, data.len);
    if (more.len) {
        rc = rc ? rc : mbedtls_sha256_update(&ctx, more.buf, more.len);
    }
    rc = rc ? rc : mbedtls_sha256_finish(&ctx, inner);
    for (int i = 0; i < 64; i++) {
        pad[i] = k[i] ^ 0x5c;
    }
    rc = rc ? rc : mbedtls_sha256_starts(&ctx, 0);
    rc = rc ? rc : mbedtls_sha256_update(&ctx, pad, 64);
    rc = rc ? rc : mbedtls_sha256_update(&ctx, inner, 32);
    rc = rc ? rc : mbedtls_sha256_finish(&ctx, inner);
    mbedtls_sha256_free(&ctx);
    hmacsha256_wipe(k, sizeof(k));
    hmacsha256_wipe(pad, sizeof(pad));
    if (rc != 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("SHA-256 failed"));
    }
    return mp_obj_new_bytes(inner, 32);  // the MAC itself: not a secret
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(hmacsha256_digest_obj, 2, 3, hmacsha256_digest);

static const mp_rom_map_elem_t hmacsha256_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_hmacsha256) },
    { MP_ROM_QSTR(MP_QSTR_digest), MP_ROM_PTR(&hmacsha256_digest_obj) },
};
static MP_DEFINE_CONST_DICT(hmacsha256_module_globals, hmacsha256_module_globals_table);

const mp_obj_module_t hmacsha256_user_cmodule = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&hmacsha256_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR_hmacsha256, hmacsha256_user_cmodule);
