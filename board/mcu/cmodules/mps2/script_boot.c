// Runs a script that the host loaded into memory (QEMU `-device loader`) from reset, before
// the REPL and without any console input, so that a run repeats instruction for instruction.
// main.c's call to pyexec_friendly_repl is routed here by `-Wl,--wrap=pyexec_friendly_repl`.
//
// Header at MPS2_SCRIPT_BASE (little-endian u32s): magic "DCS1", heap bytes, argv bytes,
// script bytes; then argv (NUL-terminated strings, sys.argv[1:]) and the script's source.
// Exit status: 0 after the script, SystemExit's code, 1 after an uncaught exception.
#include <string.h>

#include "py/compile.h"
#include "py/gc.h"
#include "py/runtime.h"
#include "py/objexcept.h"
#include "shared/runtime/pyexec.h"
#include "mps2.h"

#define SCRIPT_MAGIC (0x31534344u) // "DCS1"

int __real_pyexec_friendly_repl(void);

static int exit_code(mp_obj_t exc) {
    if (!mp_obj_is_subclass_fast(MP_OBJ_FROM_PTR(mp_obj_get_type(exc)), MP_OBJ_FROM_PTR(&mp_type_SystemExit))) {
        mp_obj_print_exception(&mp_plat_print, exc);
        return 1;
    }
    mp_obj_t val = mp_obj_exception_get_value(exc);
    if (val == mp_const_none) {
        return 0;
    }
    mp_int_t code;
    if (mp_obj_get_int_maybe(val, &code)) {
        return code;
    }
    mp_obj_print_helper(&mp_plat_print, val, PRINT_STR);
    mp_print_str(&mp_plat_print, "\n");
    return 1;
}

static int run_loaded_script(const uint32_t *hdr) {
    uint32_t heap = hdr[1], argv_len = hdr[2], src_len = hdr[3];
    const char *argv = (const char *)&hdr[4];
    const char *src = argv + argv_len;
    if (heap < 8192 || heap > MPS2_HEAP_MAX || 16 + argv_len + src_len > MPS2_SCRIPT_MAX / 2) {
        mp_print_str(&mp_plat_print, "script header out of range\n");
        return 1;
    }
    // The heap the script asked for, on a fresh interpreter (as a soft reset does).
    gc_sweep_all();
    mp_deinit();
    gc_init((void *)MPS2_HEAP_BASE, (void *)(MPS2_HEAP_BASE + heap));
    mp_init();
    for (const char *a = argv; a < argv + argv_len; a += strlen(a) + 1) {
        mp_obj_list_append(mp_sys_argv, mp_obj_new_str(a, strlen(a)));
    }
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        mp_lexer_t *lex = mp_lexer_new_from_str_len(MP_QSTR__lt_stdin_gt_, src, src_len, 0);
        mp_parse_compile_execute(lex, MP_PARSE_FILE_INPUT, mp_globals_get(), mp_locals_get());
        nlr_pop();
        return 0;
    }
    return exit_code(MP_OBJ_FROM_PTR(nlr.ret_val));
}

int __wrap_pyexec_friendly_repl(void) {
    static int booted;
    if (!booted) {
        booted = 1;
        // Flash leaves the factory erased; QEMU's RAM starts as zeros.
        memset((void *)MPS2_FLASH_BASE, 0xff, MPS2_FLASH_SIZE);
        mps2_insn(); // start the instruction clock
        const uint32_t *hdr = (const uint32_t *)MPS2_SCRIPT_BASE;
        if (hdr[0] == SCRIPT_MAGIC) {
            mps2_exit(run_loaded_script(hdr));
        }
    }
    return __real_pyexec_friendly_repl();
}
