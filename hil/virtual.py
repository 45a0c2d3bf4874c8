"""The virtual rig's door: the virtual reference device commissioned for a small site, its
I/O channel, virtual cards on vsmartcard's vpcd behind the real pcscd, relayed by the PN532
emulator to the door's reader link, a real broker (mosquitto, or RabbitMQ's MQTT plugin:
hil/brokers.py) and the reference platform."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hil.brokers import start_broker
from hil.rig import DEVICE, DOOR_TIMINGS, Timings, wait_for
from hil.site import DoorSite
from host_tools.cards import pcsc, vcard
from host_tools.cards.kit import SiteKit
from host_tools.pn532_emu import PN532Emulator, release_connection
from host_tools.vdev.device import VirtualDevice, selected_image
from host_tools.vdev.io_client import IOEvent, VirtualIO
from host_tools.vdev.provision import provision
from reference_platform.ingest import Platform
from reference_platform.store import Store

READER = "Virtual PCD 00 00"
__all__ = ["DEVICE", "DOOR_TIMINGS", "READER", "VirtualDoor"]


class VirtualDoor(DoorSite):
    """One commissioned door and everything around it, started fresh for a test
    (a `hil.rig.Door`)."""

    can_cut_network = True  # the rig's own broker: stopping it cuts the door's uplink

    def __init__(self, tmp: Path, timings: Timings, broker: str = "mosquitto") -> None:
        self.timings = timings
        self.site = SiteKit()
        self.cards: dict[str, Any] = {}
        self.refs: dict[str, bytes] = {}
        for name in ("resident", "master", "lost"):
            self.cards[name], self.refs[name] = self.site.issue()
        self.cards["clone"] = vcard.clone_of(self.cards["resident"])
        self.cards["stranger"] = SiteKit(self.site.site_id + 1).issue()[0]
        self.broker = start_broker(broker)
        self.platform = Platform(Store(str(tmp / "platform.db")), self.broker.host,
                                 self.broker.port, ack_key=self.site.command_key).start()
        self.dev = VirtualDevice(tmp / "door", image=selected_image()).start()
        provision(self.dev.pty,
                  config=self.site.door_config(DEVICE, broker={"host": self.broker.host,
                                                               "port": self.broker.port,
                                                               "keepalive": 5},
                                               door=DOOR_TIMINGS),
                  keys=self.site.door_keys(), cache=self.first_snapshot())
        self.emu = PN532Emulator()
        self.link: Any = None
        self._io: VirtualIO | None = None
        self._client: vcard.VpcdClient | None = None
        self.reboot()

    # -- power and network ------------------------------------------------------------------

    @property
    def io(self) -> VirtualIO:
        assert self._io is not None
        return self._io

    def network(self, up: bool) -> None:
        """The door's network: the broker stopped (down) or started again (up)."""
        if up:
            self.broker.up()
        else:
            self.broker.down()

    def reboot(self, cut: bool = True) -> None:
        """Power cycle (a cut when `cut`), then wait until the door is back at the platform."""
        if self._io is not None:
            self._io.close()
        if self.link is not None:
            self.link.close()
        if cut:
            self.dev.restart()
        else:
            self.dev.stop()
            self.dev.start()
        self.link = self.emu.connect(self.dev.reader_addr)
        self._io = VirtualIO(self.dev.io_addr)
        wait_for(lambda: self.state().get("online") is True, what="the door online")
        wait_for(lambda: self.io_status().get("clock_synced"), what="the door's clock")
        wait_for(lambda: str(self.io_status().get("reader", "")).startswith("pn532"),
                 what="the door's reader")

    def power_cut(self) -> None:
        self.dev.kill()

    def io_status(self) -> dict[str, Any]:
        return self.io.status()

    # -- cards -----------------------------------------------------------------------------

    def present(self, name: str) -> None:
        """Put card `name` on the rig's reader (vpcd) and in the door's field."""
        self.remove()
        self._client = vcard.VpcdClient(self.cards[name], port=vcard.vpcd_port()).start()
        release_connection(pcsc.wait_for_card(READER)[0])
        self.emu.present(READER)

    def remove(self) -> None:
        self.emu.remove()
        if self._client is not None:
            self._client.stop()
            self._client = None
            pcsc.wait_until_absent(READER)

    def swipe(self, name: str) -> bool:
        """Present a card until the door decides; True when the relay opened. Records the
        card-to-decision latency (card visible to the door -> relay on / LED red)."""
        io = self.io
        wait_for(lambda: io.state()["outputs"].get("led") in ("off", "amber"), what="the door idle")
        mark = io.set_input("rex", False)
        self._client = vcard.VpcdClient(self.cards[name], port=vcard.vpcd_port()).start()
        release_connection(pcsc.wait_for_card(READER)[0])
        t0 = time.monotonic()
        self.emu.present(READER)

        def decided() -> IOEvent | None:
            for e in io.outputs():
                if e.device_ms >= mark and ((e.name == "relay" and e.value is True)
                                            or (e.name == "led" and e.value == "red")):
                    return e
            return None

        ev: IOEvent = wait_for(decided, what=f"a decision on the {name} card")
        opened = ev.name == "relay"
        self.timings.add("card_to_relay" if opened else "card_to_refusal", ev.host_s - t0)
        self.remove()
        return opened

    def close(self) -> None:
        self.remove()
        if self._io is not None:
            self._io.close()
        if self.link is not None:
            self.link.close()
        self.dev.stop()
        self.platform.stop()
        self.broker.close()
