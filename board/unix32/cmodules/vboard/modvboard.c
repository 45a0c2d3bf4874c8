// The `vboard` module: the virtual board's drivers in C, for the unix32 image.
//
//   vboard.FlashSim(path=None, block_size=4096, block_count=512, cut_after=None)
//   vboard.PowerCut
//   vboard.ReaderLink, vboard.IOHub   the host links (modlinks.c)
//
// The same API and the same rules as board/vdev/flashsim_py.py (its docstring and
// docs/flash-simulator.md are the specification; tests/shared/test_flashsim.py runs against
// both): erase sets whole blocks to 0xFF, programming only clears bits (a program that would
// set one is refused whole, changing nothing), counters, `cut_after(n, landed)` tears the n-th
// program/erase from now and kills the chip until it is opened again, and with a path every
// program and erase is written through to the image file at once.
//
// Why C: on the ESP32 the flash partitions are C drivers (esp32.Partition) that take nothing
// from the MicroPython heap; in Python the simulator's class and objects took about 1.9 KiB of
// the image's. The object is the only heap it takes (a RAM image, for small test chips, is one
// buffer made at construction); the data path allocates nothing (littlefs may call it with the
// heap locked), moving whole 256-byte windows through a buffer on the C stack.
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "py/runtime.h"
#include "py/objexcept.h"
#include "py/mperrno.h"

#define CHUNK (256)

MP_DEFINE_EXCEPTION(PowerCut, Exception)

typedef struct {
    mp_obj_base_t base;
    mp_obj_t path;          // None for a RAM image
    int fd;                 // the image file, -1 when RAM-backed or powered off
    uint8_t *img;           // the RAM image (path None)
    mp_int_t block_size;
    mp_int_t block_count;
    mp_int_t size;
    uint64_t bytes_programmed;
    uint64_t bytes_read;
    uint64_t blocks_erased;
    uint64_t ops;
    mp_int_t cut_in;        // 0: not armed; else ops left until the torn one
    mp_int_t landed;        // bytes of the torn op that land; -1: the default share
    bool dead;
} flashsim_obj_t;

static const mp_obj_type_t flashsim_type;

static MP_NORETURN void no_power(void) {
    mp_raise_msg(&mp_type_PowerCut, MP_ERROR_TEXT("flash has no power"));
}

static MP_NORETURN void out_of_range(void) {
    mp_raise_ValueError(MP_ERROR_TEXT("access beyond the end of flash"));
}

static void io_failed(void) {
    mp_raise_OSError(errno ? errno : MP_EIO);
}

// -- storage (RAM or file): whole windows, no allocation ------------------------------------

static void load(flashsim_obj_t *self, mp_int_t addr, uint8_t *buf, size_t len) {
    if (self->fd >= 0) {
        if (pread(self->fd, buf, len, addr) != (ssize_t)len) {
            io_failed();
        }
    } else if (self->img != NULL) {
        memcpy(buf, self->img + addr, len);
    } else {
        no_power();
    }
}

static void store(flashsim_obj_t *self, mp_int_t addr, const uint8_t *buf, size_t len) {
    if (self->fd >= 0) {
        if (pwrite(self->fd, buf, len, addr) != (ssize_t)len) {
            io_failed();
        }
    } else if (self->img != NULL) {
        memcpy(self->img + addr, buf, len);
    } else {
        no_power();
    }
}

static void open_image(flashsim_obj_t *self, const char *path) {
    // Created when missing, never truncated; an image shorter than the chip is completed
    // with erased windows (as a new chip is erased).
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        io_failed();
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        mp_raise_OSError(err);
    }
    self->fd = fd;
    uint8_t ff[CHUNK];
    memset(ff, 0xff, CHUNK);
    for (mp_int_t addr = (mp_int_t)(st.st_size - st.st_size % CHUNK); addr < self->size; addr += CHUNK) {
        store(self, addr, ff, CHUNK);
    }
}

// -- power cuts --------------------------------------------------------------------------

static mp_int_t torn_share(flashsim_obj_t *self, mp_int_t n, mp_int_t dflt) {
    if (self->landed < 0) {
        return dflt;
    }
    mp_int_t k = self->landed < n - 1 ? self->landed : n - 1;
    return k > 0 ? k : 0;
}

// Count a mutating op; true when this op is the one to tear.
static bool begin_op(flashsim_obj_t *self) {
    if (self->dead) {
        no_power();
    }
    self->ops += 1;
    if (self->cut_in) {
        self->cut_in -= 1;
        if (self->cut_in == 0) {
            self->dead = true;
            return true;
        }
    }
    return false;
}

// -- primitive operations ----------------------------------------------------------------

// The address of `length` bytes at `offset` into `block`, checked against the chip.
static mp_int_t check(flashsim_obj_t *self, mp_obj_t block_in, mp_int_t offset, size_t length) {
    mp_int_t block = mp_obj_get_int(block_in);
    if (block < 0 || block >= self->block_count) {
        mp_raise_ValueError(MP_ERROR_TEXT("block out of range"));
    }
    int64_t addr = (int64_t)block * self->block_size + offset;
    if (offset < 0 || addr + (int64_t)length > self->size) {
        out_of_range();
    }
    return (mp_int_t)addr;
}

static void range_ok(flashsim_obj_t *self, mp_int_t addr, size_t n) {
    if (addr < 0 || (int64_t)addr + (int64_t)n > self->size) {
        out_of_range();
    }
}

static void do_read(flashsim_obj_t *self, mp_int_t addr, uint8_t *buf, size_t n) {
    range_ok(self, addr, n);
    if (self->dead) {
        no_power();
    }
    load(self, addr, buf, n);
    self->bytes_read += n;
}

static void do_program(flashsim_obj_t *self, mp_int_t addr, const uint8_t *data, size_t n_in) {
    range_ok(self, addr, n_in);
    if (self->dead) {
        no_power();
    }
    mp_int_t n = (mp_int_t)n_in;
    mp_int_t end = addr + n;
    uint8_t sc[CHUNK];
    // Check the whole range first: a refused program changes nothing.
    for (mp_int_t base = addr - addr % CHUNK; base < end; base += CHUNK) {
        load(self, base, sc, CHUNK);
        mp_int_t lo = addr > base ? addr : base;
        mp_int_t hi = end < base + CHUNK ? end : base + CHUNK;
        for (mp_int_t a = lo; a < hi; ++a) {
            if (data[a - addr] & ~sc[a - base] & 0xff) {
                mp_raise_ValueError(MP_ERROR_TEXT("program would set a 0 bit to 1: erase first"));
            }
        }
    }
    bool torn = begin_op(self);
    mp_int_t limit = addr + (torn ? torn_share(self, n, n / 2) : n);
    for (mp_int_t base = addr - addr % CHUNK;
         base < limit || (torn && base <= limit && limit < end); base += CHUNK) {
        load(self, base, sc, CHUNK);
        mp_int_t lo = addr > base ? addr : base;
        mp_int_t hi = limit < base + CHUNK ? limit : base + CHUNK;
        for (mp_int_t a = lo; a < hi; ++a) {
            sc[a - base] &= data[a - addr];
        }
        if (torn && base <= limit && limit < base + CHUNK && limit < end) {
            // The byte being written when power went is left half-programmed.
            sc[limit - base] &= data[limit - addr] | 0x0f;
        }
        store(self, base, sc, CHUNK);
    }
    self->bytes_programmed += (limit - addr) + (torn && limit < end ? 1 : 0);
    if (torn) {
        mp_raise_msg(&mp_type_PowerCut, MP_ERROR_TEXT("power cut while programming"));
    }
}

static void do_erase(flashsim_obj_t *self, mp_obj_t block) {
    mp_int_t addr = check(self, block, 0, self->block_size);
    bool torn = begin_op(self);
    mp_int_t bs = self->block_size;
    mp_int_t end = addr + (torn ? torn_share(self, bs, bs / 3) : bs);
    uint8_t sc[CHUNK];
    for (mp_int_t base = addr; base < end; base += CHUNK) {
        if (end - base >= CHUNK) {
            memset(sc, 0xff, CHUNK);
        } else {
            load(self, base, sc, CHUNK);
            memset(sc, 0xff, end - base);
        }
        store(self, base, sc, CHUNK);
    }
    self->blocks_erased += 1;
    if (torn) {
        mp_raise_msg(&mp_type_PowerCut, MP_ERROR_TEXT("power cut while erasing"));
    }
}

static void power_off(flashsim_obj_t *self) {
    self->dead = true;
    if (self->fd >= 0) {
        close(self->fd);
        self->fd = -1;
    }
}

// -- Python methods ----------------------------------------------------------------------

// Arm a power cut: the n-th program/erase from now is torn (n >= 1); `landed` (None: the
// default share) is how many bytes of it reach the flash.
static void arm(flashsim_obj_t *self, mp_obj_t n_in, mp_obj_t landed_in) {
    mp_int_t n = mp_obj_get_int(n_in);
    mp_int_t landed = -1;
    if (n < 1) {
        mp_raise_ValueError(MP_ERROR_TEXT("cut_after needs n >= 1"));
    }
    if (landed_in != mp_const_none) {
        landed = mp_obj_get_int(landed_in);
        if (landed < 0) {
            mp_raise_ValueError(MP_ERROR_TEXT("landed must be >= 0"));
        }
    }
    self->cut_in = n;
    self->landed = landed;
}

static mp_obj_t flashsim_cut_after(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_n, ARG_landed };
    static const mp_arg_t allowed[] = {
        { MP_QSTR_n, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_landed, MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
    };
    mp_arg_val_t args[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all(n_args - 1, pos_args + 1, kw_args, MP_ARRAY_SIZE(allowed), allowed, args);
    arm(MP_OBJ_TO_PTR(pos_args[0]), args[ARG_n].u_obj, args[ARG_landed].u_obj);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_KW(flashsim_cut_after_obj, 2, flashsim_cut_after);

static mp_obj_t flashsim_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *all_args) {
    enum { ARG_path, ARG_block_size, ARG_block_count, ARG_cut_after };
    static const mp_arg_t allowed[] = {
        { MP_QSTR_path, MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_block_size, MP_ARG_INT, {.u_int = 4096} },
        { MP_QSTR_block_count, MP_ARG_INT, {.u_int = 512} },
        { MP_QSTR_cut_after, MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
    };
    mp_arg_val_t args[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all_kw_array(n_args, n_kw, all_args, MP_ARRAY_SIZE(allowed), allowed, args);
    mp_int_t bs = args[ARG_block_size].u_int;
    mp_int_t count = args[ARG_block_count].u_int;
    if (bs % CHUNK) {
        mp_raise_ValueError(MP_ERROR_TEXT("block_size must be a multiple of 256"));
    }
    // Bounds the Python class does not need: sizes an address fits in.
    if (bs <= 0 || count <= 0 || (int64_t)bs * count > 0x40000000) {
        mp_raise_ValueError(MP_ERROR_TEXT("flash size out of range"));
    }
    flashsim_obj_t *self = mp_obj_malloc_with_finaliser(flashsim_obj_t, type);
    self->path = args[ARG_path].u_obj;
    self->fd = -1;
    self->img = NULL;
    self->block_size = bs;
    self->block_count = count;
    self->size = bs * count;
    self->bytes_programmed = self->bytes_read = self->blocks_erased = self->ops = 0;
    self->cut_in = 0;
    self->landed = -1;
    self->dead = false;
    if (self->path == mp_const_none) {
        // RAM only: for small test devices (the image lives in the heap).
        self->img = m_new(uint8_t, self->size);
        memset(self->img, 0xff, self->size);
    } else {
        // File-backed: the image never sits in RAM, so a large chip fits a small heap.
        open_image(self, mp_obj_str_get_str(self->path));
    }
    if (args[ARG_cut_after].u_obj != mp_const_none) {
        arm(self, args[ARG_cut_after].u_obj, mp_const_none);
    }
    return MP_OBJ_FROM_PTR(self);
}

static mp_obj_t flashsim_read(mp_obj_t self_in, mp_obj_t addr_in, mp_obj_t buf_in) {
    flashsim_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mp_buffer_info_t buf;
    mp_get_buffer_raise(buf_in, &buf, MP_BUFFER_WRITE);
    do_read(self, mp_obj_get_int(addr_in), buf.buf, buf.len);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_3(flashsim_read_obj, flashsim_read);

static mp_obj_t flashsim_program(mp_obj_t self_in, mp_obj_t addr_in, mp_obj_t data_in) {
    flashsim_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mp_buffer_info_t data;
    mp_get_buffer_raise(data_in, &data, MP_BUFFER_READ);
    do_program(self, mp_obj_get_int(addr_in), data.buf, data.len);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_3(flashsim_program_obj, flashsim_program);

static mp_obj_t flashsim_erase(mp_obj_t self_in, mp_obj_t block) {
    do_erase(MP_OBJ_TO_PTR(self_in), block);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(flashsim_erase_obj, flashsim_erase);

static mp_obj_t flashsim_readblocks(size_t n_args, const mp_obj_t *args) {
    flashsim_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    mp_buffer_info_t buf;
    mp_get_buffer_raise(args[2], &buf, MP_BUFFER_WRITE);
    mp_int_t offset = n_args > 3 ? mp_obj_get_int(args[3]) : 0;
    do_read(self, check(self, args[1], offset, buf.len), buf.buf, buf.len);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(flashsim_readblocks_obj, 3, 4, flashsim_readblocks);

static mp_obj_t flashsim_writeblocks(size_t n_args, const mp_obj_t *args) {
    flashsim_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    mp_buffer_info_t buf;
    mp_get_buffer_raise(args[2], &buf, MP_BUFFER_READ);
    if (n_args < 4 || args[3] == mp_const_none) {
        // Simple protocol: whole blocks, erase then program.
        check(self, args[1], 0, buf.len);
        mp_int_t block = mp_obj_get_int(args[1]);
        size_t nblocks = buf.len / self->block_size;
        for (size_t k = 0; k < nblocks; ++k) {
            do_erase(self, MP_OBJ_NEW_SMALL_INT(block + k));
            do_program(self, (block + k) * self->block_size,
                (const uint8_t *)buf.buf + k * self->block_size, self->block_size);
        }
    } else {
        do_program(self, check(self, args[1], mp_obj_get_int(args[3]), buf.len), buf.buf, buf.len);
    }
    return MP_OBJ_NEW_SMALL_INT(0);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(flashsim_writeblocks_obj, 3, 4, flashsim_writeblocks);

static mp_obj_t flashsim_ioctl(mp_obj_t self_in, mp_obj_t op_in, mp_obj_t arg_in) {
    flashsim_obj_t *self = MP_OBJ_TO_PTR(self_in);
    switch (mp_obj_get_int(op_in)) {
        case 4:
            return mp_obj_new_int(self->block_count);
        case 5:
            return mp_obj_new_int(self->block_size);
        case 6:
            do_erase(self, arg_in);
            return MP_OBJ_NEW_SMALL_INT(0);
        case 1:
        case 2:
        case 3:
            return MP_OBJ_NEW_SMALL_INT(0);
        default:
            return mp_const_none;
    }
}
static MP_DEFINE_CONST_FUN_OBJ_3(flashsim_ioctl_obj, flashsim_ioctl);

// Power off: the image file is closed and every later operation raises PowerCut.
static mp_obj_t flashsim_close(mp_obj_t self_in) {
    power_off(MP_OBJ_TO_PTR(self_in));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(flashsim_close_obj, flashsim_close);

// A chip dropped without close() gives its file descriptor back (as a file object would).
static mp_obj_t flashsim_del(mp_obj_t self_in) {
    flashsim_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (self->fd >= 0) {
        close(self->fd);
        self->fd = -1;
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(flashsim_del_obj, flashsim_del);

// The attributes the Python class has: geometry and counters (read-only), and `_dead`, which
// tests set to look at a powered-off RAM chip from outside.
static void flashsim_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest) {
    flashsim_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (dest[0] == MP_OBJ_SENTINEL) {
        if (attr == MP_QSTR__dead && dest[1] != MP_OBJ_NULL) {
            self->dead = mp_obj_is_true(dest[1]);
            dest[0] = MP_OBJ_NULL;
        }
        return;
    }
    if (dest[0] != MP_OBJ_NULL) {
        return;
    }
    switch (attr) {
        case MP_QSTR_block_size:
            dest[0] = mp_obj_new_int(self->block_size);
            break;
        case MP_QSTR_block_count:
            dest[0] = mp_obj_new_int(self->block_count);
            break;
        case MP_QSTR_size:
            dest[0] = mp_obj_new_int(self->size);
            break;
        case MP_QSTR_path:
            dest[0] = self->path;
            break;
        case MP_QSTR_bytes_programmed:
            dest[0] = mp_obj_new_int_from_ull(self->bytes_programmed);
            break;
        case MP_QSTR_bytes_read:
            dest[0] = mp_obj_new_int_from_ull(self->bytes_read);
            break;
        case MP_QSTR_blocks_erased:
            dest[0] = mp_obj_new_int_from_ull(self->blocks_erased);
            break;
        case MP_QSTR_ops:
            dest[0] = mp_obj_new_int_from_ull(self->ops);
            break;
        case MP_QSTR__dead:
            dest[0] = mp_obj_new_bool(self->dead);
            break;
        default:
            dest[1] = MP_OBJ_SENTINEL;  // a method: look in the locals dict
            break;
    }
}

static const mp_rom_map_elem_t flashsim_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_read), MP_ROM_PTR(&flashsim_read_obj) },
    { MP_ROM_QSTR(MP_QSTR_program), MP_ROM_PTR(&flashsim_program_obj) },
    { MP_ROM_QSTR(MP_QSTR_erase), MP_ROM_PTR(&flashsim_erase_obj) },
    { MP_ROM_QSTR(MP_QSTR_readblocks), MP_ROM_PTR(&flashsim_readblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_writeblocks), MP_ROM_PTR(&flashsim_writeblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_ioctl), MP_ROM_PTR(&flashsim_ioctl_obj) },
    { MP_ROM_QSTR(MP_QSTR_cut_after), MP_ROM_PTR(&flashsim_cut_after_obj) },
    { MP_ROM_QSTR(MP_QSTR_close), MP_ROM_PTR(&flashsim_close_obj) },
    { MP_ROM_QSTR(MP_QSTR___del__), MP_ROM_PTR(&flashsim_del_obj) },
};
static MP_DEFINE_CONST_DICT(flashsim_locals, flashsim_locals_table);

static MP_DEFINE_CONST_OBJ_TYPE(
    flashsim_type, MP_QSTR_FlashSim, MP_TYPE_FLAG_NONE,
    make_new, flashsim_make_new,
    attr, flashsim_attr,
    locals_dict, &flashsim_locals
    );

extern const mp_obj_type_t vboard_readerlink_type;  // modlinks.c
extern const mp_obj_type_t vboard_iohub_type;

static const mp_rom_map_elem_t vboard_module_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_vboard) },
    { MP_ROM_QSTR(MP_QSTR_FlashSim), MP_ROM_PTR(&flashsim_type) },
    { MP_ROM_QSTR(MP_QSTR_PowerCut), MP_ROM_PTR(&mp_type_PowerCut) },
    { MP_ROM_QSTR(MP_QSTR_ReaderLink), MP_ROM_PTR(&vboard_readerlink_type) },
    { MP_ROM_QSTR(MP_QSTR_IOHub), MP_ROM_PTR(&vboard_iohub_type) },
};
static MP_DEFINE_CONST_DICT(vboard_module_globals, vboard_module_table);

const mp_obj_module_t vboard_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&vboard_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR_vboard, vboard_module);
