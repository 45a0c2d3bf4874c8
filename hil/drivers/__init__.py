"""The rig's drivers, each bound to a resource on the bench (hil/resources.py), in labgrid's
terms: power, console, I/O and reader, for the virtual rig and for a bench. The one strategy
(hil/strategy.py) drives a door through these interfaces only, so a rig is a choice of drivers.

    driver   does                       virtual rig                    bench
    power    on / off / cycle           the device's process           the I/O board's relay
    console  wait_up / status / reset   status on the I/O channel      mpremote on [dut] port
             provision / wipe_journal
    io       inputs, timed outputs      the device's I/O channel       the I/O board
    reader   place / present / remove   vpcd + PN532 emulator          [cards] + emulator on [reader]

A driver bound to the device's process (the virtual rig's I/O channel and reader link) drops
its connection before a power cycle (`disconnect`) and makes it again after (`connect`); a
driver bound to a port on the bench keeps it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from hil.rig import DoorIO


class PowerDriver(Protocol):
    def on(self) -> None:
        """Power the door (nothing when it runs)."""
        ...

    def off(self) -> None:
        """Cut the door's power now: a power cut."""
        ...

    def cycle(self) -> None:
        """Off, then on again: the door boots on the flash it had."""
        ...

    def close(self) -> None: ...


class ConsoleDriver(Protocol):
    def wait_up(self) -> None:
        """Until the firmware answers after power-up."""
        ...

    def status(self) -> dict[str, Any]:
        """The firmware's own status (clock, reader, uplink...)."""
        ...

    def reset(self) -> None:
        """A reset without a power cut."""
        ...

    def provision(self, config: dict[str, Any], keys: dict[str, Any], cache: bytes) -> None:
        """Config, key file and whitelist, written as commissioning writes them."""
        ...

    def wipe_journal(self, power_off: Callable[[], None]) -> None:
        """Leave the door with an empty journal and its power off (`power_off` cuts it)."""
        ...

    def close(self) -> None: ...


class IODriver(DoorIO, Protocol):
    """The door's I/O (`hil.rig.DoorIO`) as the strategy uses it."""

    rig_clock_timings: bool  # card timings on the rig's clock (True) or the host's (False)

    def outputs(self, name: str | None = None) -> list[Any]: ...
    def current(self, name: str) -> Any: ...
    def connect(self) -> None: ...
    def disconnect(self) -> None: ...
    def close(self) -> None: ...


class ReaderDriver(Protocol):
    def place(self, name: str) -> str:
        """Card `name` on its reader, seen by pcscd; the reader's name."""
        ...

    def present(self, reader: str) -> None:
        """That reader's card in the door's field (the PN532 emulator relays to it)."""
        ...

    def remove(self) -> None:
        """The field empty, until the door has seen it so."""
        ...

    def connect(self) -> None: ...
    def disconnect(self) -> None: ...
    def close(self) -> None: ...
