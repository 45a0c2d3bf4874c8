"""The bench rig's door (a `hil.rig.Door`): a board on the bench, assembled from the drivers
bound to the rig file's resources (hil/resources.py, hil/drivers/):

- its console (`[dut] port`, mpremote): commissioning with the site's config, key file and
  whitelist, its status, the journal wipe that makes each test's door a fresh one;
- the rig I/O board (`[io] port`): the door's inputs, its outputs with the board's
  microsecond timestamps, and its power relay (`[power] port`, the same board by default);
- its reader UART wired to a host serial port (`[reader] port`) answered by the PN532 emulator,
  which puts the card of a named PC/SC reader in the door's field (`[cards]`, `[changer]`);
- the broker (`[broker]`, else a local one: mosquitto, or RabbitMQ with `--broker rabbitmq`)
  and the reference platform.

The strategy (hil/strategy.py) does the rest.
"""

from __future__ import annotations

from pathlib import Path

from hil.drivers.cards import BenchCards
from hil.drivers.console import DutConsole
from hil.drivers.io import BoardIO, RigIOBoard
from hil.drivers.power import BoardPower
from hil.drivers.reader import BenchReader
from hil.resources import BenchResources
from hil.rig import RigConfig, RigError, Timings
from hil.site import WHITELIST
from hil.strategy import DoorStrategy
from host_tools.cards import sitekeys
from host_tools.cards.kit import SiteKit
from host_tools.errors import UserError
from host_tools.services.brokers import start_broker
from reference_platform.ingest import Platform
from reference_platform.store import Store


class BenchDoor(DoorStrategy):
    def __init__(self, cfg: RigConfig, tmp: Path, timings: Timings, broker: str = "mosquitto") -> None:
        super().__init__(timings)
        self.resources = res = BenchResources.from_config(cfg)
        try:
            keys, store = sitekeys.load(res.site_keys)
        except UserError as e:
            raise RigError(f"[site] keys: {e}") from None
        self.site = SiteKit.from_keys(keys)
        self.cards = BenchCards(res.cards.cards, res.cards.changer)
        self.refs = {role: self.cards.read_ref(role, store) for role, _, _ in WHITELIST}
        try:
            self.board = RigIOBoard(res.io.port)
            self.own(self.board.close)
            power_board = self.board
            if res.power.port != res.io.port:  # the power relay on a board of its own
                power_board = RigIOBoard(res.power.port)
                self.own(power_board.close)
            address = self.use_broker(start_broker(broker) if res.network.address is None else None,
                                      res.network.address)
            self.platform = Platform(Store(str(tmp / "platform.db")), *address,
                                     **self.site.platform_keys()).start()
            self.own(self.platform.stop)
            self.assemble(power=BoardPower(power_board), console=DutConsole(res.console.port),
                          io=BoardIO(self.board), reader=BenchReader(self.cards, res.reader.port))
            self.commission(address)
        except BaseException:
            self.close_after_failure()
            raise
