// The door controller's ESP32 reference board: an ESP32 module with 16 MB of flash
// (docs/hardware.md). The application is frozen into the image (board/esp32/manifest.py).
#define MICROPY_HW_BOARD_NAME "Door controller ESP32 reference board"
#define MICROPY_HW_MCU_NAME "ESP32"

// ROM partitions stay usable: `doorctl deploy --romfs` can still put a newer application
// beside the frozen one on a board running this image (board/romfs.py).
#define MICROPY_VFS_ROM (1)

// No Bluetooth on this board: its RAM goes to the heap.
#define MICROPY_PY_BLUETOOTH (0)
