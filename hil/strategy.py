"""The one strategy that drives a door under test (labgrid's strategy): commissioning, reboot,
waiting until the door is ready, a swipe and its timing, power and network cuts. It talks to
the rig only through its drivers (hil/drivers/), so `VirtualDoor` and `BenchDoor` just
assemble drivers bound to their resources and hand them over.

    Door (hil.rig.Door)  = DoorSite (the platform's half: hil/site.py)
                         + DoorStrategy (this: the door's half)
                             power ── console ── io ── reader ── broker
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hil.drivers import ConsoleDriver, IODriver, PowerDriver, ReaderDriver
from hil.rig import DOOR_TIMINGS, RigError, Timings, wait_for
from hil.site import DoorSite
from host_tools.services.brokers import RigBroker

READY_S = 30.0  # a boot until clock, reader and platform are there, on a loaded machine


class DoorStrategy(DoorSite):
    """A `hil.rig.Door` once `assemble` has been given its drivers."""

    power: PowerDriver
    console: ConsoleDriver
    reader: ReaderDriver
    _io: IODriver
    broker: RigBroker | None
    can_cut_network: bool

    def __init__(self, timings: Timings) -> None:
        self.timings = timings
        self.broker = None
        self.can_cut_network = False
        self._closers: list[Callable[[], None]] = []

    def own(self, close: Callable[[], None]) -> None:
        """Something the door started, stopped (in reverse order) when the door closes."""
        self._closers.append(close)

    def assemble(self, power: PowerDriver, console: ConsoleDriver, io: IODriver,
                 reader: ReaderDriver) -> None:
        self.power, self.console, self._io, self.reader = power, console, io, reader
        for driver in (power, io, console, reader):
            self.own(driver.close)

    def use_broker(self, broker: RigBroker | None, address: tuple[str, int] | None = None
                   ) -> tuple[str, int]:
        """The door's network: a broker the rig started (it can cut the door off), or the
        rig file's `address`. Returns the address the door is given."""
        self.broker = broker
        self.can_cut_network = broker is not None
        if broker is not None:
            self.own(broker.close)
            return broker.host, broker.port
        assert address is not None
        return address

    # -- the door's life ---------------------------------------------------------------------

    def commission(self, broker: tuple[str, int]) -> None:
        """A freshly commissioned door: powered, config, key file and the first whitelist
        written, the journal empty, booted and ready."""
        host, port = broker
        self.power.on()
        self.console.wait_up()
        config = self.site.door_config(self.device_id, broker={"host": host, "port": port,
                                                               "keepalive": 5},
                                       door=DOOR_TIMINGS)
        self.console.provision(config, self.site.door_keys(self.device_id), self.first_snapshot())
        self.console.wipe_journal(self.power.off)
        self.reboot()

    @property
    def io(self) -> IODriver:
        return self._io

    def power_cut(self) -> None:
        self.power.off()

    def reboot(self, cut: bool = True) -> None:
        """A power cycle (`cut`), or a reset without one; then until the door is ready."""
        self._io.disconnect()
        self.reader.disconnect()
        if cut:
            self.power.cycle()
        else:
            self.console.reset()
        self.reader.connect()
        self._io.connect()
        self.wait_ready()

    def wait_ready(self) -> None:
        """The door runs with its clock set, its reader found and the platform seeing it online."""
        self.console.wait_up()
        wait_for(lambda: self.console.status().get("clock_synced"), READY_S, "the door's clock")
        wait_for(lambda: str(self.console.status().get("reader", "")).startswith("pn532"),
                 READY_S, "the door's reader")
        wait_for(lambda: self.state().get("online") is True, READY_S, "the door online")

    def network(self, up: bool) -> None:
        """The door's network: the rig's broker stopped (down) or back on its port (up)."""
        if self.broker is None:
            raise RigError("the rig's broker ([broker] in the rig file) is not ours to stop")
        if up:
            self.broker.up()
        else:
            self.broker.down()

    # -- cards -----------------------------------------------------------------------------

    def remove(self) -> None:
        self.reader.remove()

    def swipe(self, name: str) -> bool:
        """Present a card until the door decides; True when the relay opened. Records the card
        in the field until the relay (or the red LED): on the rig's clock where the I/O driver
        has one worth more than the host's (the I/O board's µs, carried over from the host
        moment through the timestamp of a command sent just before), else on the host's."""
        io = self._io
        wait_for(lambda: io.current("led") in ("off", "amber"), what="the door idle")
        reader = self.reader.place(name)
        mark = io.set_input("rex", False)  # the rig's clock now, ms
        marked = t0 = time.monotonic()
        self.reader.present(reader)
        t0_rig = mark + (time.monotonic() - marked) * 1000

        def decided() -> Any:
            return next((o for o in io.outputs() if o.device_ms >= mark and (
                (o.name == "relay" and o.value is True) or (o.name == "led" and o.value == "red"))),
                None)

        ev = wait_for(decided, what=f"a decision on the {name} card")
        opened = ev.name == "relay"
        took = (ev.device_ms - t0_rig) / 1000 if io.rig_clock_timings else ev.host_s - t0
        self.timings.add("card_to_relay" if opened else "card_to_refusal", took)
        self.remove()
        return opened

    def close(self) -> None:
        """Everything the door started stopped, each even when one before it fails."""
        failed: BaseException | None = None
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            try:
                close()
            except Exception as e:
                failed = failed or e
        if failed is not None:
            raise failed

    def close_after_failure(self) -> None:
        """Close, the error that stopped the door's making being the one that counts."""
        try:
            self.close()
        except Exception:
            pass
