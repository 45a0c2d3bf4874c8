"""The virtual rig's door: the virtual reference device (real firmware, MicroPython unix port)
commissioned for a small site, assembled from the drivers bound to it (hil/drivers/): its
process as the power, its I/O channel as the I/O and status, virtual cards on vsmartcard's
vpcd behind the real pcscd relayed by the PN532 emulator to its reader socket; a real broker
(mosquitto, or RabbitMQ's MQTT plugin: host_tools/services/brokers.py) and the reference
platform. The strategy (hil/strategy.py) does the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hil.drivers.console import DeviceConsole
from hil.drivers.io import DeviceIO
from hil.drivers.power import DevicePower
from hil.drivers.reader import VPCD_READER, VpcdReader
from hil.rig import DEVICE, DOOR_TIMINGS, Timings
from hil.strategy import DoorStrategy
from host_tools.cards import vcard
from host_tools.cards.kit import SiteKit
from host_tools.services.brokers import start_broker
from host_tools.vdev.device import VirtualDevice, selected_image
from reference_platform.ingest import Platform
from reference_platform.store import Store

READER = VPCD_READER
__all__ = ["DEVICE", "DOOR_TIMINGS", "READER", "VirtualDoor"]


class VirtualDoor(DoorStrategy):
    """One commissioned door and everything around it, started fresh for a test
    (a `hil.rig.Door`)."""

    def __init__(self, tmp: Path, timings: Timings, broker: str = "mosquitto") -> None:
        super().__init__(timings)
        self.site = SiteKit()
        self.cards: dict[str, Any] = {}
        self.refs: dict[str, bytes] = {}
        for name in ("resident", "master", "lost"):
            self.cards[name], self.refs[name] = self.site.issue()
        self.cards["clone"] = vcard.clone_of(self.cards["resident"])
        self.cards["stranger"] = SiteKit(self.site.site_id + 1).issue()[0]
        try:
            address = self.use_broker(start_broker(broker))
            self.platform = Platform(Store(str(tmp / "platform.db")), *address,
                                     ack_key=self.site.command_key).start()
            self.own(self.platform.stop)
            self.dev = VirtualDevice(tmp / "door", image=selected_image())
            self._device_io = io = DeviceIO(self.dev)
            self.assemble(power=DevicePower(self.dev), console=DeviceConsole(self.dev, io), io=io,
                          reader=VpcdReader(self.dev, self.cards))
            self.commission(address)
        except BaseException:
            self.close_after_failure()
            raise

    @property
    def io(self) -> DeviceIO:
        return self._device_io
