// The door firmware's board support for QEMU's mps2-an385 (Cortex-M3), shared by the
// `mps2` module and the script boot.
#ifndef DOORCTL_MPS2_H
#define DOORCTL_MPS2_H

#include <stdint.h>

// Memory map used by the door firmware (QEMU mps2-an385):
//   0x00000000  4 MiB  SSRAM1: code, data, stack (the port's linker script)
//   0x20000000  4 MiB  SSRAM2/3: the MicroPython heap of a loaded script (size from its header)
//   0x21000000  1 MiB  PSRAM: a script (first half) and files for it (second half), loaded
//                      by the host (QEMU `-device loader`); its last 64 bytes: the clock state
//   0x21100000 15 MiB  PSRAM: flash partitions (mps2.Flash), a littlefs block device
#define MPS2_HEAP_BASE      (0x20000000u)
#define MPS2_HEAP_MAX       (0x00400000u)
#define MPS2_SCRIPT_BASE    (0x21000000u)
#define MPS2_SCRIPT_MAX     (0x00100000u)
#define MPS2_FLASH_BASE     (0x21100000u)
#define MPS2_FLASH_SIZE     (0x00F00000u)

// The guest clock under `-icount shift=MPS2_ICOUNT_SHIFT`: one instruction per 2**shift ns.
#define MPS2_ICOUNT_SHIFT   (6)

uint64_t mps2_insn(void);
void mps2_exit(int status) __attribute__((noreturn));

#endif
