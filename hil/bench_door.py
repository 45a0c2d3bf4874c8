"""The bench rig's door (a `hil.rig.Door`): a commissioned board on the bench, assembled from

- its console (`[dut] port`, mpremote): commissioning with the site's config, key file and
  whitelist, its status, the journal wipe that makes each test's door a fresh one;
- the rig I/O board (`[io] port`, hil/bench.py): the door's inputs, its power relay (a power
  cut, a reboot), its outputs with the board's microsecond timestamps;
- its reader UART wired to a host serial port (`[reader] port`) answered by the PN532 emulator,
  which puts the card of a named PC/SC reader in the door's field (`[cards]`, hil/bench_cards.py);
- the broker (`[broker]`, else a local one: mosquitto, or RabbitMQ with `--broker rabbitmq`)
  and the reference platform.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from firmware.pn532 import CMD_IN_LIST_PASSIVE_TARGET
from hil.bench import BoardIO, DoorOutput, RigIOBoard
from hil.bench_cards import BenchCards
from hil.brokers import RigBroker, start_broker
from hil.dut_console import DutConsole
from hil.rig import DOOR_TIMINGS, RigConfig, RigError, Timings, wait_for
from hil.site import WHITELIST, DoorSite
from host_tools.cards import sitekeys
from host_tools.cards.kit import SiteKit
from host_tools.errors import UserError
from host_tools.pn532_emu import EmulatorLink, PN532Emulator
from reference_platform.ingest import Platform
from reference_platform.store import Store

POWER_OFF_S = 0.5  # how long a power cycle leaves the door without power
ABSENT_S = 0.6  # the door's absent_ms (300) and a margin for a loaded machine


class BenchDoor(DoorSite):
    def __init__(self, cfg: RigConfig, tmp: Path, timings: Timings, broker: str = "mosquitto") -> None:
        assert cfg.site_keys is not None and cfg.dut_port and cfg.io_port and cfg.reader_port
        self.cfg = cfg
        self.timings = timings
        self._closers: list[Any] = []
        try:
            keys, store = sitekeys.load(cfg.site_keys)
        except UserError as e:
            raise RigError(f"[site] keys: {e}") from None
        self.site = SiteKit.from_keys(keys)
        self.cards = BenchCards(cfg.cards, cfg.changer)
        self.refs = {role: self.cards.read_ref(role, store) for role, _, _ in WHITELIST}
        try:
            self.board = RigIOBoard(cfg.io_port)
            self._closers.append(self.board)
            self._io = BoardIO(self.board)
            self.console = DutConsole(cfg.dut_port)
            self.broker: RigBroker | None = None
            if cfg.broker is None:
                self.broker = start_broker(broker)
                self._closers.append(self.broker)
                host, port = self.broker.host, self.broker.port
            else:
                host, port = cfg.broker
            self.can_cut_network = self.broker is not None
            self.platform = Platform(Store(str(tmp / "platform.db")), host, port,
                                     **self.site.platform_keys()).start()
            self._closers.append(self.platform)
            self.emu = PN532Emulator()
            try:
                self.link: EmulatorLink = self.emu.open_serial(cfg.reader_port)
            except OSError as e:
                raise RigError(f"[reader] port: {e}") from None
            self._closers.append(self.link)
            self._commission(host, port)
        except BaseException:
            self.close()
            raise

    def _commission(self, host: str, port: int) -> None:
        """Power up, write config, key file and whitelist, erase the journal, power cycle."""
        self.board.power(True)
        self.console.wait_up()
        config = self.site.door_config(self.device_id, broker={"host": host, "port": port,
                                                               "keepalive": 5},
                                       door=DOOR_TIMINGS)
        self.console.provision(config, self.site.door_keys(self.device_id), self.first_snapshot())
        held = self.console.hold_wiped()
        try:
            self.board.power(False)
        finally:
            held.kill()
            held.wait()
        self.reboot()

    # -- power and network ------------------------------------------------------------------

    @property
    def io(self) -> BoardIO:
        return self._io

    def power_cut(self) -> None:
        self.board.power(False)

    def reboot(self, cut: bool = True) -> None:
        """Power cycle through the rig's power relay (`cut`), or a reset from the console; then
        wait until the door runs with its clock set, its reader found and the platform seeing
        it online."""
        if cut:
            self.board.power(False)
            time.sleep(POWER_OFF_S)
            self.board.power(True)
        else:
            self.console.run("import machine\nmachine.reset()", timeout=5)
        self.console.wait_up()
        wait_for(lambda: self.console.status().get("clock_synced"), 30, "the door's clock")
        wait_for(lambda: str(self.console.status().get("reader", "")).startswith("pn532"), 30,
                 "the door's reader")
        wait_for(lambda: self.state().get("online") is True, 30, "the door online")

    def network(self, up: bool) -> None:
        if self.broker is None:
            raise RigError("the rig's broker ([broker] in the rig file) is not ours to stop")
        if up:
            self.broker.up()
        else:
            self.broker.down()

    def io_status(self) -> dict[str, Any]:
        return self.console.status()

    # -- cards -----------------------------------------------------------------------------

    def present(self, name: str) -> None:
        """Put card `name`'s reader in the door's field."""
        self.emu.present(self.cards.place(name))

    def remove(self) -> None:
        """Take the card out of the field until the door has seen the field empty long enough
        to end the presentation: a door does not read a card again that never left. The door
        lets the PN532 wait for a card (one InListPassiveTarget pending on the empty field, not
        a poll every few ms), so: its next InListPassiveTarget after the card left, then the
        door's absent_ms (firmware/card_task.py, 300 ms) with a margin."""
        self.emu.remove()
        seen = len(self.emu.commands)
        wait_for(lambda: CMD_IN_LIST_PASSIVE_TARGET in self.emu.commands[seen:], 10,
                 "the door to see its field empty")
        time.sleep(ABSENT_S)

    def swipe(self, name: str) -> bool:
        """Present a card until the door decides; True when the relay opened. Records the card's
        arrival in the field until the relay (or the red LED), on the I/O board's clock."""
        io = self.io
        wait_for(lambda: io.current("led") in ("off", "amber"), what="the door idle")
        reader = self.cards.place(name)
        mark = io.set_input("rex", False)  # the board's clock now, ms
        marked = time.monotonic()
        self.emu.present(reader)
        t0 = mark + (time.monotonic() - marked) * 1000  # the card's arrival on the board clock

        def decided() -> DoorOutput | None:
            return next((o for o in io.outputs() if o.device_ms >= mark and (
                (o.name == "relay" and o.value is True) or (o.name == "led" and o.value == "red"))),
                None)

        ev: DoorOutput = wait_for(decided, what=f"a decision on the {name} card")
        opened = ev.name == "relay"
        self.timings.add("card_to_relay" if opened else "card_to_refusal", (ev.device_ms - t0) / 1000)
        self.remove()
        return opened

    def close(self) -> None:
        emu = getattr(self, "emu", None)
        if emu is not None:
            emu.remove()
        board = getattr(self, "board", None)
        if board is not None:
            try:
                board.power(False)
            except RigError:
                pass
        for c in reversed(self._closers):
            try:
                if hasattr(c, "stop"):
                    c.stop()
                else:
                    c.close()
            except Exception:
                pass
        self._closers = []
