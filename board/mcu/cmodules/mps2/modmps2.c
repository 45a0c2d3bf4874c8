// The `mps2` module: what the door firmware needs from the bare-metal board that the stock
// qemu port does not give.
//   mps2.insn()                  instructions executed since reset (exact under
//                                `-icount shift=6`, see mps2_insn)
//   mps2.Flash(offset, size)     a NOR-flash-like block device (erase to 0xFF, programming
//                                only clears bits) on the board's PSRAM, for littlefs
//   mps2.exit(status)            stop QEMU with that exit status (semihosting)
#include <string.h>

#include "py/runtime.h"
#include "py/mperrno.h"
#include "py/mphal.h"
#include "extmod/vfs.h"
#include "mps2.h"

// CMSDK APB timer 0: a 32-bit down-counter at the 25 MHz peripheral clock (40 ns per tick).
#define TIMER0_CTRL   (*(volatile uint32_t *)0x40000000u)
#define TIMER0_VALUE  (*(volatile uint32_t *)0x40000004u)
#define TIMER0_RELOAD (*(volatile uint32_t *)0x40000008u)
#define TICK_NS       (40u)

// Kept outside the code's RAM: QEMU retranslates the code on a page that is written to.
typedef struct {
    uint64_t wraps;
    uint32_t last;
    uint32_t started;
} timer_state_t;
#define TIMER_STATE ((volatile timer_state_t *)(MPS2_SCRIPT_BASE + MPS2_SCRIPT_MAX - 64))

static void timer_start(void) {
    TIMER0_CTRL = 0;
    TIMER0_RELOAD = 0xffffffffu;
    TIMER0_VALUE = 0xffffffffu;
    TIMER0_CTRL = 1;
    TIMER_STATE->last = 0xffffffffu;
    TIMER_STATE->wraps = 0;
    TIMER_STATE->started = 1;
}

// Under `-icount shift=6` every instruction advances the guest clock by exactly 64 ns, and the
// timer, started on an instruction boundary, ticks every 40 ns: the number of whole
// instructions since the start is the only integer n with 64 n in [40 t, 40 t + 40), i.e.
// ceil(40 t / 64) for t ticks. A 40 ns timer cannot resolve shift=0 (1 ns instructions).
// The register is read alone in its own function: QEMU's icount makes a device access exact by
// ending the translation block at it, and a read mixed into surrounding code gave counts that
// wandered by tens of instructions.
static uint32_t __attribute__((noinline)) timer_value(void) {
    return TIMER0_VALUE;
}

uint64_t mps2_insn(void) {
    volatile timer_state_t *st = TIMER_STATE;
    if (st->started != 1) {
        timer_start();
    }
    uint32_t v = timer_value();
    if (v > st->last) {
        st->wraps += 1;
    }
    st->last = v;
    uint64_t ticks = (st->wraps << 32) + (0xffffffffu - v);
    // ceil(ticks * 40 / 64) without a 64-bit division (a library call on the Cortex-M3).
    uint64_t ns = ticks * TICK_NS;
    return (ns + ((1u << MPS2_ICOUNT_SHIFT) - 1)) >> MPS2_ICOUNT_SHIFT;
}

void mps2_exit(int status) {
    // SYS_EXIT_EXTENDED (0x20): the A32/T32 form that carries an exit status to QEMU.
    uint32_t block[2] = {0x20026u /* ADP_Stopped_ApplicationExit */, (uint32_t)status};
    register uint32_t r0 __asm__ ("r0") = 0x20;
    register const void *r1 __asm__ ("r1") = block;
    __asm__ __volatile__ ("bkpt 0xAB" : "+r" (r0) : "r" (r1) : "memory");
    for (;;) {
    }
}

// littlefs's file times; the board has no battery-backed clock, so this is time since reset.
uint64_t mp_hal_time_ns(void) {
    return (uint64_t)mp_hal_ticks_ms() * 1000000u;
}

static mp_obj_t mps2_insn_obj_fn(void) {
    return mp_obj_new_int_from_ull(mps2_insn());
}
static MP_DEFINE_CONST_FUN_OBJ_0(mps2_insn_obj, mps2_insn_obj_fn);

static mp_obj_t mps2_exit_fn(mp_obj_t status) {
    mps2_exit(mp_obj_get_int(status));
}
static MP_DEFINE_CONST_FUN_OBJ_1(mps2_exit_obj, mps2_exit_fn);

// ---- Flash: a block device on PSRAM with NOR rules ----

typedef struct {
    mp_obj_base_t base;
    uint8_t *mem;
    uint32_t block_size;
    uint32_t block_count;
} mps2_flash_obj_t;

static const mp_obj_type_t mps2_flash_type;

static mp_obj_t mps2_flash_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *all_args) {
    enum { ARG_offset, ARG_size, ARG_block_size };
    static const mp_arg_t allowed[] = {
        { MP_QSTR_offset, MP_ARG_REQUIRED | MP_ARG_INT, {.u_int = 0} },
        { MP_QSTR_size, MP_ARG_REQUIRED | MP_ARG_INT, {.u_int = 0} },
        { MP_QSTR_block_size, MP_ARG_INT, {.u_int = 4096} },
    };
    mp_arg_val_t args[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all_kw_array(n_args, n_kw, all_args, MP_ARRAY_SIZE(allowed), allowed, args);
    mp_int_t offset = args[ARG_offset].u_int;
    mp_int_t size = args[ARG_size].u_int;
    mp_int_t bs = args[ARG_block_size].u_int;
    if (bs < 128 || (bs & (bs - 1)) || offset < 0 || size < bs || offset % bs || size % bs
        || (mp_uint_t)(offset + size) > MPS2_FLASH_SIZE) {
        mp_raise_ValueError(MP_ERROR_TEXT("flash partition outside the board's flash"));
    }
    mps2_flash_obj_t *self = mp_obj_malloc(mps2_flash_obj_t, type);
    self->mem = (uint8_t *)(uintptr_t)(MPS2_FLASH_BASE + offset);
    self->block_size = bs;
    self->block_count = size / bs;
    return MP_OBJ_FROM_PTR(self);
}

static uint8_t *flash_at(mps2_flash_obj_t *self, mp_obj_t block, mp_obj_t offset, size_t len) {
    mp_uint_t b = mp_obj_get_int(block);
    mp_uint_t off = offset == mp_const_none ? 0 : mp_obj_get_int(offset);
    uint64_t start = (uint64_t)b * self->block_size + off;
    if (start + len > (uint64_t)self->block_count * self->block_size) {
        mp_raise_OSError(MP_EIO);
    }
    return self->mem + start;
}

static mp_obj_t mps2_flash_readblocks(size_t n_args, const mp_obj_t *args) {
    mps2_flash_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    mp_buffer_info_t buf;
    mp_get_buffer_raise(args[2], &buf, MP_BUFFER_WRITE);
    const uint8_t *src = flash_at(self, args[1], n_args > 3 ? args[3] : mp_const_none, buf.len);
    memcpy(buf.buf, src, buf.len);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(mps2_flash_readblocks_obj, 3, 4, mps2_flash_readblocks);

// With an offset (littlefs's extended interface) this programs: bits only go from 1 to 0,
// the erase is a separate ioctl. Without one, whole blocks are erased then programmed.
static mp_obj_t mps2_flash_writeblocks(size_t n_args, const mp_obj_t *args) {
    mps2_flash_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    mp_buffer_info_t buf;
    mp_get_buffer_raise(args[2], &buf, MP_BUFFER_READ);
    bool extended = n_args > 3 && args[3] != mp_const_none;
    uint8_t *dst = flash_at(self, args[1], extended ? args[3] : mp_const_none, buf.len);
    const uint8_t *src = buf.buf;
    if (!extended) {
        memset(dst, 0xff, buf.len);
    }
    for (size_t i = 0; i < buf.len; ++i) {
        dst[i] &= src[i];
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(mps2_flash_writeblocks_obj, 3, 4, mps2_flash_writeblocks);

static mp_obj_t mps2_flash_ioctl(mp_obj_t self_in, mp_obj_t op_in, mp_obj_t arg_in) {
    mps2_flash_obj_t *self = MP_OBJ_TO_PTR(self_in);
    switch (mp_obj_get_int(op_in)) {
        case MP_BLOCKDEV_IOCTL_INIT:
        case MP_BLOCKDEV_IOCTL_DEINIT:
        case MP_BLOCKDEV_IOCTL_SYNC:
            return MP_OBJ_NEW_SMALL_INT(0);
        case MP_BLOCKDEV_IOCTL_BLOCK_COUNT:
            return MP_OBJ_NEW_SMALL_INT(self->block_count);
        case MP_BLOCKDEV_IOCTL_BLOCK_SIZE:
            return MP_OBJ_NEW_SMALL_INT(self->block_size);
        case MP_BLOCKDEV_IOCTL_BLOCK_ERASE: {
            uint8_t *p = flash_at(self, arg_in, mp_const_none, self->block_size);
            memset(p, 0xff, self->block_size);
            return MP_OBJ_NEW_SMALL_INT(0);
        }
        default:
            return mp_const_none;
    }
}
static MP_DEFINE_CONST_FUN_OBJ_3(mps2_flash_ioctl_obj, mps2_flash_ioctl);

static const mp_rom_map_elem_t mps2_flash_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_readblocks), MP_ROM_PTR(&mps2_flash_readblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_writeblocks), MP_ROM_PTR(&mps2_flash_writeblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_ioctl), MP_ROM_PTR(&mps2_flash_ioctl_obj) },
};
static MP_DEFINE_CONST_DICT(mps2_flash_locals, mps2_flash_locals_table);

static MP_DEFINE_CONST_OBJ_TYPE(
    mps2_flash_type, MP_QSTR_Flash, MP_TYPE_FLAG_NONE,
    make_new, mps2_flash_make_new,
    locals_dict, &mps2_flash_locals
    );

static const mp_rom_map_elem_t mps2_module_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_mps2) },
    { MP_ROM_QSTR(MP_QSTR_insn), MP_ROM_PTR(&mps2_insn_obj) },
    { MP_ROM_QSTR(MP_QSTR_exit), MP_ROM_PTR(&mps2_exit_obj) },
    { MP_ROM_QSTR(MP_QSTR_Flash), MP_ROM_PTR(&mps2_flash_type) },
    { MP_ROM_QSTR(MP_QSTR_FLASH_SIZE), MP_ROM_INT(MPS2_FLASH_SIZE) },
};
static MP_DEFINE_CONST_DICT(mps2_module_globals, mps2_module_table);

const mp_obj_module_t mps2_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&mps2_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR_mps2, mps2_module);
