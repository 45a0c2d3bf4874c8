"""The ESP32 reference board: pins bound to the firmware's board interface.

Wiring and parts are in docs/hardware.md. `machine`, `network` and `esp32` are imported
inside the constructors, so the pure parts (supervised-contact decoding) are importable
and tested on the unix port.
"""

import time

from board import interface

# What this board needs on the device, read by deploy and the image manifest without
# importing this module (host_tools/boards.py, docs/architecture.md "Boards").
PLATFORM = "esp32"
PACKAGES = ("firmware", "wire", "card_reader", "journal_format", "ticks", "crypto", "offline_cache")
DEVICE_FILES = ("board/romfs.py",)
ENTRY = "board/esp32_main.py"  # the device's main.py: picks the deployed set, then main()

# Pin map (ESP32-WROOM-32E or ESP32-WROVER-E module, see docs/hardware.md).
PINS = {
    "relay": 26,  # lock relay driver (active high; the firmware sets the lock's polarity)
    "contact_adc": 34,  # supervised door contact, ADC1 channel 6 (input only)
    "rex": 32,  # request-to-exit button to GND, internal pull-up; held at power-up = safe mode
    "tamper": 33,  # enclosure tamper switch, closed = lid shut, to GND
    "fire": 35,  # fire-panel release loop through an opto, input only, external pull-up
    "mains": 36,  # mains-present sense from the PSU through an opto, input only
    "buzzer": 25,  # piezo driver transistor
    "led_green": 27,
    "led_red": 14,
    "reader_tx": 19,  # UART2 TX -> PN532 RXD (HSU mode)
    "reader_rx": 18,  # UART2 RX <- PN532 TXD
}
OUTPUTS = ("relay", "buzzer", "led_green", "led_red", "reader_tx")
# GPIOs that cannot be used here: 6-11 (the module's SPI flash), 16-17 (PSRAM on WROVER
# modules), and the strapping pins 0, 2, 5, 12, 15 (their level at reset selects the boot
# mode or flash voltage; an installer's wiring must not be able to stop the board booting).
RESERVED = (0, 2, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16, 17)
INPUT_ONLY = (34, 35, 36, 37, 38, 39)  # no output driver, no internal pull resistors
ADC1 = (32, 33, 34, 35, 36, 37, 38, 39)  # ADC2 is unusable while Wi-Fi runs
READER_BAUD = 115200

# Supervised door contact: the contact sits in a 3.3 V divider with two end-of-line
# resistors (4.7 kOhm in series, 4.7 kOhm across the contact) against a 10 kOhm pull-up.
# The loop voltage at the ADC (mV) classifies the loop:
#   short (0 Ohm)             ~    0 mV  -> "short"
#   contact closed (4.7 k)    ~ 1055 mV  -> "closed"
#   contact open  (9.4 k)     ~ 1600 mV  -> "open"
#   wire cut (infinite)       ~ 3300 mV  -> "cut"
CONTACT_THRESHOLDS_MV = (500, 1330, 2400)


def classify_contact(mv, thresholds=CONTACT_THRESHOLDS_MV):
    """Loop voltage in millivolts -> closed / open / short / cut."""
    short_max, closed_max, open_max = thresholds
    if mv < short_max:
        return "short"
    if mv < closed_max:
        return "closed"
    if mv < open_max:
        return "open"
    return "cut"


CONTACT_SAMPLES = 5


def median(values):
    """Median of a short list of readings (ADC spikes from Wi-Fi bursts are dropped)."""
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("no readings")
    if n % 2:
        return s[n // 2]
    return (s[n // 2 - 1] + s[n // 2]) // 2


def contact_state(samples_mv, thresholds=CONTACT_THRESHOLDS_MV):
    """Several ADC readings of the loop (mV) -> closed / open / short / cut."""
    return classify_contact(median(samples_mv), thresholds)


class _Out:
    def __init__(self, pin_no, active_high=True):
        from machine import Pin

        self._pin = Pin(pin_no, Pin.OUT, value=0 if active_high else 1)
        self._on = 1 if active_high else 0
        self._state = False

    def set(self, on):
        self._state = bool(on)
        self._pin.value(self._on if on else 1 - self._on)

    def value(self):
        return self._state


class _In:
    """A digital input, True when active (closed to GND by default)."""

    def __init__(self, pin_no, active_low=True, pull=True):
        from machine import Pin

        self._pin = Pin(pin_no, Pin.IN, Pin.PULL_UP if pull else None)
        self._active = 0 if active_low else 1

    def read(self):
        return self._pin.value() == self._active


class _SupervisedContact:
    """The door loop on an ADC1 pin; `read()` takes the median of a few calibrated readings."""

    def __init__(self, pin_no, thresholds=CONTACT_THRESHOLDS_MV):
        from machine import ADC, Pin

        self._adc = ADC(Pin(pin_no), atten=ADC.ATTN_11DB)
        self._thresholds = thresholds
        self._buf = [0] * CONTACT_SAMPLES

    def millivolts(self):
        for i in range(CONTACT_SAMPLES):
            self._buf[i] = self._adc.read_uv() // 1000
        return median(self._buf)

    def read(self):
        return classify_contact(self.millivolts(), self._thresholds)


class _Led:
    def __init__(self, green, red):
        self._g = _Out(green)
        self._r = _Out(red)

    def set(self, colour):
        self._g.set(colour in ("green", "amber"))
        self._r.set(colour in ("red", "amber"))


class _Clock(interface.Clock):
    def __init__(self):
        self._offset = None
        self.trusted = False  # set from a time the door could verify (docs/protocol.md)

    def time(self):
        return None if self._offset is None else time.time() + self._offset

    def set_time(self, epoch, trusted=True):
        # The RTC keeps running across soft resets; the offset keeps UTC explicit.
        self._offset = epoch - time.time()
        self.trusted = trusted


class _ReaderUART:
    """PN532 on UART2 (HSU): the same read/write/drain interface as the virtual board."""

    def __init__(self):
        import asyncio

        from machine import UART

        self._uart = UART(2, READER_BAUD, tx=PINS["reader_tx"], rx=PINS["reader_rx"],
                          rxbuf=512, timeout=0)
        self._reader = asyncio.StreamReader(self._uart)
        self._writer = asyncio.StreamWriter(self._uart, {})

    def connected(self):
        return True

    def write(self, data):
        self._writer.write(data)
        return len(data)

    async def drain(self):
        await self._writer.drain()

    def any(self):
        return self._uart.any()

    def reset_input(self):
        while self._uart.any():
            self._uart.read()

    async def read(self, n, timeout_ms=None):
        if timeout_ms is None:
            return await self._reader.read(n)
        # The UART reads without waiting (timeout=0): what is there now, polled until the
        # timeout (board/interface.py).
        return await interface.read_polled(self._uart, n, timeout_ms)


class _Network:
    def __init__(self, ssid=None, password=None):
        import network

        self._wlan = network.WLAN(network.STA_IF)
        self._ssid = ssid
        self._password = password

    def connect(self):
        self._wlan.active(True)
        if self._ssid and not self._wlan.isconnected():
            self._wlan.connect(self._ssid, self._password)
        return self._wlan.isconnected()

    def isconnected(self):
        return self._wlan.isconnected()


class Esp32RefBoard(interface.Board):
    name = "esp32-ref"
    fs_root = "/"

    def __init__(self, wifi_ssid=None, wifi_password=None, contact_thresholds=None,
                 fire_fitted=False):
        import esp32

        self.clock = _Clock()
        self.relay = _Out(PINS["relay"])
        self.door_contact = _SupervisedContact(PINS["contact_adc"],
                                               contact_thresholds or CONTACT_THRESHOLDS_MV)
        self.rex = _In(PINS["rex"])
        self.tamper = _In(PINS["tamper"], active_low=False)  # open switch = lid off
        # Fail-safe fire loop: the panel's contact keeps the opto lit (pin low) while all is
        # well; a fire alarm or a cut wire lets the external pull-up raise the pin = fire.
        # Not fitted (the default), the pin would read as fire: the input is then absent.
        self.fire = _In(PINS["fire"], active_low=False, pull=False) if fire_fitted else None
        self.power = _In(PINS["mains"], pull=False)
        self.buzzer = _Out(PINS["buzzer"])
        self.led = _Led(PINS["led_green"], PINS["led_red"])
        self.reader_uart = _ReaderUART()
        self.network = _Network(wifi_ssid, wifi_password)
        # littlefs is the MicroPython "vfs" partition, mounted at / by the port's boot code;
        # the journal has its own raw partition (see docs/hardware.md, partition table).
        parts = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="journal")
        self.journal_dev = parts[0] if parts else None
        self.blockdev = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")[0]

    def reset_cause(self):
        return reset_cause()


def reset_cause():
    """"power" after a power-on or brown-out; "reset" after a watchdog, soft or deep-sleep
    reset (the firmware then reports no power loss)."""
    import machine

    c = machine.reset_cause()
    return "power" if c in (machine.PWRON_RESET, getattr(machine, "BROWNOUT_RESET", -1)) else "reset"


def safe_mode_requested():
    """REX held at power-up: stay at the REPL and leave the firmware stopped."""
    from machine import Pin

    return Pin(PINS["rex"], Pin.IN, Pin.PULL_UP).value() == 0


def main():
    """Entry point called by main.py (written by `doorctl deploy`, board/esp32_main.py).

    config.json may carry `"wifi": {"ssid": ..., "password": ...}`, `"fire_input": true`
    when the fire-panel loop is wired, and `"contact_thresholds_mv": [short_max,
    closed_max, open_max]` for unusual door loops.
    """
    if safe_mode_requested():
        print("doorctl: REX held at power-up: safe mode, firmware not started")
        return
    from firmware import config
    from firmware.main import run

    cfg = config.load("/")
    wifi = cfg.get("wifi") or {}
    thresholds = cfg.get("contact_thresholds_mv")
    board = Esp32RefBoard(wifi.get("ssid"), wifi.get("password"),
                          tuple(thresholds) if thresholds else None,
                          bool(cfg.get("fire_input")))
    board.network.connect()
    try:
        run(board)
    except KeyboardInterrupt:
        raise  # Ctrl-C from a console or mpremote: leave the firmware for the REPL
    except Exception as e:  # noqa: BLE001  a door controller must come back by itself
        import sys

        import machine

        sys.print_exception(e)
        print("doorctl: firmware stopped; restarting in 5 s (Ctrl-C for the REPL)")
        time.sleep(5)
        machine.reset()
