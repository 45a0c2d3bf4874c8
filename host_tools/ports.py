"""The door's serial port when `--port` is left out: like `mpremote connect auto`, the USB
serial ports this computer has (those with a USB vendor id); exactly one is taken, none or
several are a one-line error that lists them."""

from __future__ import annotations

import sys

from host_tools.errors import EXIT_NO_DEVICE, EXIT_USAGE, UserError


def usb_serial_ports() -> list[str]:
    from serial.tools import list_ports

    return sorted(p.device for p in list_ports.comports() if p.vid is not None)


def pick_port(port: str | None) -> str:
    """`port` as given, else the one USB serial port (named on stderr)."""
    if port:
        return port
    found = usb_serial_ports()
    if not found:
        raise UserError("no USB serial port found and no --port given: plug in the door's USB cable, "
                        "or give --port (a virtual door's pty is in its vdev.json)", EXIT_NO_DEVICE)
    if len(found) > 1:
        raise UserError(f"several USB serial ports ({', '.join(found)}): choose one with --port",
                        EXIT_USAGE)
    print(f"using {found[0]} (the only USB serial port)", file=sys.stderr)
    return found[0]
