// aes128: AES-128 in CBC and on single blocks (ECB) as stateless functions.
//
// Why: MicroPython's cryptolib makes a 304-byte heap object per key and per direction, and
// one more per CBC chain, because its object holds the cipher's key schedule. A DESFire EV2
// session made about fifteen of them per card read, and at a small heap those 304-byte
// requests were the ones a fragmented heap could not meet (docs/architecture.md). Here the
// key schedule lives on the C stack for the length of one call: the only heap a call takes
// is its result. The key is expanded again at every call (about as many instructions as one
// block), which the EV2 session's instruction count measures (`doorctl bench mcu`).
//
// aes128.cbc(key, iv, data, encrypt) -> bytes: `key` and `iv` 16 bytes, `data` whole blocks.
// aes128.block(key, block, encrypt) -> bytes: one 16-byte block (ECB); any other length is a
// ValueError, so a caller cannot chain two blocks where cryptolib would take each alone.

#include <string.h>

#include "py/runtime.h"
#include "py/objstr.h"
#include "mbedtls/aes.h"

static mp_obj_t aes128_cbc(size_t n_args, const mp_obj_t *args) {
    mp_buffer_info_t key, iv, data;
    mp_get_buffer_raise(args[0], &key, MP_BUFFER_READ);
    mp_get_buffer_raise(args[1], &iv, MP_BUFFER_READ);
    mp_get_buffer_raise(args[2], &data, MP_BUFFER_READ);
    bool encrypt = mp_obj_is_true(args[3]);
    if (key.len != 16 || iv.len != 16) {
        mp_raise_ValueError(MP_ERROR_TEXT("AES-128 key and IV must be 16 bytes"));
    }
    if (data.len % 16) {
        mp_raise_ValueError(MP_ERROR_TEXT("CBC data must be whole blocks"));
    }
    vstr_t out;
    vstr_init_len(&out, data.len);  // before the key is on the stack: a MemoryError leaves none there
    mbedtls_aes_context ctx;
    unsigned char chain[16];
    memcpy(chain, iv.buf, 16);
    mbedtls_aes_init(&ctx);
    int rc = encrypt ? mbedtls_aes_setkey_enc(&ctx, key.buf, 128)
                     : mbedtls_aes_setkey_dec(&ctx, key.buf, 128);
    if (rc == 0 && data.len) {
        rc = mbedtls_aes_crypt_cbc(&ctx, encrypt ? MBEDTLS_AES_ENCRYPT : MBEDTLS_AES_DECRYPT,
            data.len, chain, data.buf, (unsigned char *)out.buf);
    }
    mbedtls_aes_free(&ctx);  // zeroes the key schedule
    memset(chain, 0, sizeof(chain));
    if (rc != 0) {
        vstr_clear(&out);
        mp_raise_ValueError(MP_ERROR_TEXT("AES failed"));
    }
    return mp_obj_new_bytes_from_vstr(&out);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(aes128_cbc_obj, 4, 4, aes128_cbc);

static mp_obj_t aes128_block(mp_obj_t key_in, mp_obj_t block_in, mp_obj_t encrypt_in) {
    mp_buffer_info_t key, block;
    mp_get_buffer_raise(key_in, &key, MP_BUFFER_READ);
    mp_get_buffer_raise(block_in, &block, MP_BUFFER_READ);
    bool encrypt = mp_obj_is_true(encrypt_in);
    if (key.len != 16) {
        mp_raise_ValueError(MP_ERROR_TEXT("AES-128 key must be 16 bytes"));
    }
    if (block.len != 16) {
        mp_raise_ValueError(MP_ERROR_TEXT("an AES block is 16 bytes"));
    }
    vstr_t out;
    vstr_init_len(&out, 16);  // before the key is on the stack, as in cbc
    mbedtls_aes_context ctx;
    mbedtls_aes_init(&ctx);
    int rc = encrypt ? mbedtls_aes_setkey_enc(&ctx, key.buf, 128)
                     : mbedtls_aes_setkey_dec(&ctx, key.buf, 128);
    if (rc == 0) {
        rc = mbedtls_aes_crypt_ecb(&ctx, encrypt ? MBEDTLS_AES_ENCRYPT : MBEDTLS_AES_DECRYPT,
            block.buf, (unsigned char *)out.buf);
    }
    mbedtls_aes_free(&ctx);
    if (rc != 0) {
        vstr_clear(&out);
        mp_raise_ValueError(MP_ERROR_TEXT("AES failed"));
    }
    return mp_obj_new_bytes_from_vstr(&out);
}
static MP_DEFINE_CONST_FUN_OBJ_3(aes128_block_obj, aes128_block);

static const mp_rom_map_elem_t aes128_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_aes128) },
    { MP_ROM_QSTR(MP_QSTR_cbc), MP_ROM_PTR(&aes128_cbc_obj) },
    { MP_ROM_QSTR(MP_QSTR_block), MP_ROM_PTR(&aes128_block_obj) },
};
static MP_DEFINE_CONST_DICT(aes128_module_globals, aes128_module_globals_table);

const mp_obj_module_t aes128_user_cmodule = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&aes128_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR_aes128, aes128_user_cmodule);
