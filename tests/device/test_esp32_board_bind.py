# The ESP32 board's drivers bound to stand-ins for the ESP32 port's `machine`, `esp32` and
# `network` modules (this port has no Pin/ADC/UART): every attribute of the board interface
# is there, and each input and output has the polarity docs/hardware.md gives it.
# Each test runs in its own MicroPython process, so the stand-ins do not leak.
import io
import sys

LEVELS = {}  # gpio -> level seen by inputs / last level driven by outputs
ADC_UV = {}  # gpio -> microvolts at the ADC pin
UARTS = []
WLAN_CALLS = []


class _Pin:
    IN = 1
    OUT = 3
    PULL_UP = 2

    def __init__(self, no, mode=IN, pull=None, value=None):
        self.no = no
        self.mode = mode
        if mode == _Pin.OUT and value is not None:
            LEVELS[no] = value
        elif mode == _Pin.IN and no not in LEVELS:
            LEVELS[no] = 1 if pull == _Pin.PULL_UP else 0

    def value(self, v=None):
        if v is None:
            return LEVELS[self.no]
        LEVELS[self.no] = v
        return None


class _ADC:
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        assert atten == _ADC.ATTN_11DB
        self.no = pin.no

    def read_uv(self):
        return ADC_UV[self.no]


class _UART(io.IOBase):
    """A UART whose receive side holds `rx`; pollable like machine.UART."""

    def __init__(self, uid, baud, tx=None, rx=None, rxbuf=0, timeout=None):
        self.args = (uid, baud, tx, rx)
        self.sent = bytearray()
        self.rx = bytearray()
        UARTS.append(self)

    def write(self, b):
        self.sent += b
        return len(b)

    def read(self, n=-1):
        if not self.rx:
            return None
        n = len(self.rx) if n < 0 else n
        out = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return out

    def readinto(self, b):
        data = self.read(len(b))
        if data is None:
            return None
        b[:len(data)] = data
        return len(data)

    def any(self):
        return len(self.rx)

    def ioctl(self, req, arg):
        if req == 3:  # MP_STREAM_POLL
            return arg & (0x0001 if self.rx else 0) | arg & 0x0004  # POLLIN, POLLOUT
        return 0


class _Machine:
    Pin = _Pin
    ADC = _ADC
    UART = _UART


class _Partition:
    TYPE_DATA = 1

    def __init__(self, label):
        self.label = label

    @staticmethod
    def find(kind, label=None):
        return [_Partition(label)]


class _Esp32:
    Partition = _Partition


class _WLAN:
    def __init__(self, mode):
        self.up = False

    def active(self, on):
        self.up = on

    def connect(self, ssid, password):
        WLAN_CALLS.append((ssid, password))

    def isconnected(self):
        return False


class _Network:
    STA_IF = 0
    WLAN = _WLAN


def _board(**kw):
    sys.modules["machine"] = _Machine()
    sys.modules["esp32"] = _Esp32()
    sys.modules["network"] = _Network()
    from board.esp32_ref import PINS, Esp32RefBoard

    return Esp32RefBoard(**kw), PINS


def test_every_interface_member_is_there():
    from board import interface

    b, _ = _board()
    assert isinstance(b, interface.Board) and isinstance(b.clock, interface.Clock)
    assert b.name == "esp32-ref" and b.fs_root == "/"
    for attr in interface.REQUIRED + interface.OPTIONAL:
        if attr != "fire":  # not fitted unless configured
            assert getattr(b, attr) is not None, attr
    assert b.fire is None
    assert b.blockdev.label == "vfs" and b.journal_dev.label == "journal"
    for m in interface.CLOCK:
        if m != "trusted":
            assert callable(getattr(b.clock, m)), m
    assert b.clock.trusted is False  # until a time the door could verify sets it


def test_outputs_start_off_and_follow_set():
    b, pins = _board()
    assert LEVELS[pins["relay"]] == 0 and LEVELS[pins["buzzer"]] == 0
    b.relay.set(True)
    assert LEVELS[pins["relay"]] == 1 and b.relay.value() is True
    b.relay.set(False)
    assert LEVELS[pins["relay"]] == 0 and b.relay.value() is False
    b.buzzer.set(1)
    assert LEVELS[pins["buzzer"]] == 1


def test_led_colours():
    b, pins = _board()
    g, r = pins["led_green"], pins["led_red"]
    for colour, want in (("green", (1, 0)), ("red", (0, 1)), ("amber", (1, 1)), ("off", (0, 0))):
        b.led.set(colour)
        assert (LEVELS[g], LEVELS[r]) == want, colour


def test_input_polarities():
    b, pins = _board(fire_fitted=True)
    # REX: button to GND with pull-up
    LEVELS[pins["rex"]] = 1
    assert b.rex.read() is False
    LEVELS[pins["rex"]] = 0
    assert b.rex.read() is True
    # tamper: switch closed (low) while the lid is shut
    LEVELS[pins["tamper"]] = 0
    assert b.tamper.read() is False
    LEVELS[pins["tamper"]] = 1
    assert b.tamper.read() is True
    # mains: opto lit (low) while mains is present
    LEVELS[pins["mains"]] = 0
    assert b.power.read() is True
    LEVELS[pins["mains"]] = 1
    assert b.power.read() is False
    # fire: fail-safe loop, opto lit (low) while all is well; high = alarm or cut wire
    LEVELS[pins["fire"]] = 0
    assert b.fire.read() is False
    LEVELS[pins["fire"]] = 1
    assert b.fire.read() is True


def test_door_contact_through_the_adc():
    b, pins = _board()
    adc = pins["contact_adc"]
    for uv, state in ((0, "short"), (1055000, "closed"), (1600000, "open"), (3100000, "cut")):
        ADC_UV[adc] = uv
        assert b.door_contact.read() == state, uv


def test_configured_contact_thresholds():
    b, pins = _board(contact_thresholds=(300, 800, 2000))
    ADC_UV[pins["contact_adc"]] = 1010000
    assert b.door_contact.read() == "open"


def test_reader_on_uart2():
    b, pins = _board()
    assert UARTS[0].args == (2, 115200, pins["reader_tx"], pins["reader_rx"])
    assert b.reader_uart.connected() is True
    assert b.reader_uart.write(b"\x00\x00\xff") == 3


def test_reader_link_reads_and_times_out():
    import asyncio

    b, _ = _board()
    uart = UARTS[0]
    link = b.reader_uart

    async def go():
        nothing = await link.read(4, 50)  # nothing sent: b"" after the timeout
        uart.rx += b"\x00\x00\xff\x00\xff\x00"
        got = await link.read(4, 1000)
        left = link.any()
        link.reset_input()
        link.write(b"\x55\x55")
        await link.drain()
        return nothing, got, left

    nothing, got, left = asyncio.run(go())
    assert nothing == b""
    assert got == b"\x00\x00\xff\x00"
    assert left == 2 and uart.any() == 0
    assert bytes(uart.sent).endswith(b"\x55\x55")


def test_clock_is_unset_until_synced():
    b, _ = _board()
    assert b.clock.time() is None
    b.clock.set_time(1790000000)
    t = b.clock.time()
    assert 1790000000 <= t <= 1790000000 + 5
    a = b.clock.ticks_ms()
    assert b.clock.ticks_diff(b.clock.ticks_ms(), a) >= 0


def test_wifi_joins_the_configured_network():
    b, _ = _board(wifi_ssid="door-net", wifi_password="secret")
    b.network.connect()
    assert WLAN_CALLS == [("door-net", "secret")]
    assert b.network.isconnected() is False


class _FakeFirmwareMain:
    def __init__(self):
        self.boards = []

    def run(self, board, extra_tasks=()):
        self.boards.append(board)


def test_rex_held_at_power_up_keeps_the_firmware_stopped():
    _board()  # installs the stand-ins
    import firmware  # noqa: F401

    fw = _FakeFirmwareMain()
    sys.modules["firmware.main"] = fw
    from board.esp32_ref import PINS, main

    LEVELS[PINS["rex"]] = 0  # held
    main()
    assert fw.boards == []


def test_boot_builds_the_board_and_runs_the_firmware():
    _board()
    import firmware  # noqa: F401

    fw = _FakeFirmwareMain()
    sys.modules["firmware.main"] = fw
    from board.esp32_ref import PINS, Esp32RefBoard, main

    LEVELS[PINS["rex"]] = 1  # not pressed
    main()
    assert len(fw.boards) == 1 and isinstance(fw.boards[0], Esp32RefBoard)
    assert fw.boards[0].network._wlan.up is True  # Wi-Fi started before the firmware
