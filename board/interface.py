"""The board interface: every member the firmware reads from a board, in one place.

A board module subclasses `Board` (and its clock `Clock`) and sets what it has; optional
members keep the defaults here, so the firmware reads `board.x` and never guesses with
`getattr`. docs/architecture.md ("The board interface") is the table of these members, and
tests/host/unit/test_board_interface.py checks both stay in step with the firmware and the boards.
"""

import time


class Clock:
    """Monotonic ticks in ms with MicroPython's wraparound (deadlines with `ticks_add`,
    comparisons with `ticks_diff`), and the wall clock once the application sets it."""

    trusted = False  # set from a time the door could verify (docs/protocol.md)

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_add(self, t, delta):
        return time.ticks_add(t, delta)

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def time(self):
        """Epoch seconds, or None while unset."""
        raise NotImplementedError

    def set_time(self, epoch, trusted=True):
        raise NotImplementedError


class Board:
    # Required: every board sets these.
    name = None  # e.g. "virtual", "esp32-ref"
    fs_root = None  # where the board mounted littlefs ("/" on the ESP32, "/flash" elsewhere)
    clock = None  # a Clock
    # Optional: None means not fitted, and the firmware runs without that part.
    relay = None  # lock output, set(on)/value(): without it, no door task
    door_contact = None  # read() -> "closed" | "open" | "short" | "cut"
    rex = None  # read() -> bool
    tamper = None  # read() -> bool
    fire = None  # read() -> bool
    power = None  # read() -> bool, mains present
    buzzer = None  # set(on)
    led = None  # set("off" | "green" | "red" | "amber")
    reader_uart = None  # the PN532 link: without it, no card task
    journal_dev = None  # the journal's raw partition: without it, no journal and no uplink
    boot_count = 0  # boots of this flash, counted by the board (0: not counted)

    def reset_cause(self):
        """"power" after a power-on or brown-out, "reset" after any other reset, None when
        the board cannot tell (the firmware then takes it as a power-up)."""
        return None


REQUIRED = ("name", "fs_root", "clock")
OPTIONAL = ("relay", "door_contact", "rex", "tamper", "fire", "power", "buzzer", "led",
            "reader_uart", "journal_dev", "boot_count", "reset_cause")
CLOCK = ("ticks_ms", "ticks_add", "ticks_diff", "time", "set_time", "trusted")


async def read_polled(port, n, timeout_ms):
    """Up to n bytes from `port` (a UART, or the virtual board's link: `any()`, and `read(n)`
    without waiting), polled every millisecond until `timeout_ms` has passed (b"" then). Not
    `asyncio.wait_for_ms`: that makes a task, its timeout and their generators, 512 bytes
    per read on the 32-bit image, at every exchange with a card, while the door's other
    tasks need the heap too. `any()` first: a C stream's `read(n)` allocates its buffer before
    it finds nothing, and a poll a millisecond would pace collections while the door waits."""
    import asyncio

    t0 = time.ticks_ms()
    while not port.any():
        if time.ticks_diff(time.ticks_ms(), t0) >= timeout_ms:
            return b""
        await asyncio.sleep_ms(1)
    return port.read(n) or b""
