"""`doorctl reader`: the PN532 emulator between a door controller's reader link and a PC/SC reader."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import typer

from host_tools.errors import EXIT_NO_DEVICE, EXIT_USAGE, UserError, fail
from host_tools.field_timing import FieldTiming
from host_tools.pn532_emu import EmulatorLink, PN532Emulator

reader_app = typer.Typer(help="The card reader link: a PN532 emulated on this computer.",
                         no_args_is_help=True)


def parse_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"reader address {text!r} is not HOST:PORT (e.g. 127.0.0.1:40125)", EXIT_USAGE)
    return host, int(port)


def device_reader_addr(state_dir: Path) -> tuple[str, int]:
    path = state_dir / "vdev.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no {path}: start the virtual device with `doorctl virtual run --state "
                        f"{state_dir}` first", EXIT_NO_DEVICE) from None
    except ValueError:
        raise UserError(f"{path} is not valid JSON: restart the virtual device", EXIT_NO_DEVICE) from None
    if "reader" not in data:
        raise UserError(f"{path} names no reader address: restart the virtual device", EXIT_NO_DEVICE)
    return parse_addr(str(data["reader"]))


@reader_app.command("emulate")
def emulate(
    device_state: Path = typer.Option(None, "--device-state",
                                      help="State directory of a running virtual device (reads vdev.json)."),
    reader_addr: str = typer.Option(None, "--reader-addr", help="The device's reader link, HOST:PORT."),
    serial_port: str = typer.Option(None, "--serial",
                                    help="A serial port wired to the door's reader UART (a USB-serial "
                                         "adapter on a bench), or one a host program opens (nfcpy, "
                                         "libnfc) to use this computer's PC/SC card as a PN532."),
    pcsc_reader: str = typer.Option(None, "--pcsc",
                                    help="PC/SC reader whose card is in the field (part of its name); "
                                         "without it the field stays empty."),
    field_timing: bool = typer.Option(False, "--field-timing",
                                      help="Answer when a real PN532 and DESFire EV2 would: the HSU "
                                           "wire paced at 115,200 baud, each command delayed by its "
                                           "ISO 14443 air time and the card's latency "
                                           "(docs/pn532.md, \"Field timing\")."),
) -> None:
    """Act as the door's PN532: answer its frames and relay its APDUs to the card on a PC/SC reader.

    Runs until Ctrl-C; waits for the device when its link closes (a reboot). A card put on the
    PC/SC reader is in the door's field from its next poll.

    Example: doorctl reader emulate --device-state door1 --pcsc "Virtual PCD 00 00"
    """
    try:
        if sum(x is not None for x in (device_state, reader_addr, serial_port)) != 1:
            raise UserError("give exactly one of --device-state DIR, --reader-addr HOST:PORT or "
                            "--serial PORT", EXIT_USAGE)
        addr: tuple[str, int] | None = None
        if device_state is not None:
            addr = device_reader_addr(device_state)
        elif reader_addr is not None:
            addr = parse_addr(reader_addr)
        emu = PN532Emulator(field_timing=FieldTiming() if field_timing else None)
        if pcsc_reader is not None:
            from host_tools.cards import pcsc

            name = str(pcsc.find_reader(pcsc_reader))
            emu.present(name)
            typer.echo(f"cards    from {name}")
        if addr is None:
            try:
                link = emu.open_serial(serial_port)
            except OSError as e:
                raise UserError(f"cannot open the serial port: {e}", EXIT_NO_DEVICE) from None
            where = serial_port
        else:
            try:
                link = emu.connect(addr, timeout=5)
            except OSError as e:
                raise UserError(f"cannot reach the reader link at {addr[0]}:{addr[1]} ({e}): is the "
                                "device running?", EXIT_NO_DEVICE) from None
            where = f"{addr[0]}:{addr[1]}"
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    timing = ", field timing" if field_timing else ""
    typer.echo(f"reader   {where}  (PN532 emulated{timing}; Ctrl-C to stop)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set():
            if link.closed.is_set() and addr is None:  # a serial port does not come back by itself
                typer.echo(f"serial port closed: {link.error or 'end of input'}")
                break
            if link.closed.is_set():  # the device rebooted or stopped: wait for it to come back
                link.close()
                typer.echo("reader link closed; waiting for the device")
                again = _reconnect(emu, device_state, addr, stop)
                if again is None:
                    break
                link = again
                typer.echo("reader link up again")
            stop.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        link.close()
        emu.remove()
    typer.echo(f"stopped  {len(emu.commands)} commands, {emu.apdus} APDUs relayed")


def _reconnect(emu: PN532Emulator, device_state: Path | None, addr: tuple[str, int],
               stop: threading.Event) -> EmulatorLink | None:
    while not stop.is_set():
        try:
            if device_state is not None:
                addr = device_reader_addr(device_state)  # the address may change on a restart
            return emu.connect(addr, timeout=1)
        except (OSError, UserError):
            stop.wait(0.5)
    return None


def register(app: typer.Typer) -> None:
    app.add_typer(reader_app, name="reader")
