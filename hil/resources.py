"""What is on the bench (labgrid's resources): plain descriptions of the ports, readers and
network a rig has, with nothing opened. The drivers (hil/drivers/) bind to them; a rig file
(hil/rig.py, `RigConfig`) describes a bench's. The virtual rig has one resource, the virtual
device itself (host_tools.vdev.device.VirtualDevice), which all its drivers bind to.

    bench                                      virtual rig
    console  SerialPort [dut] port             the virtual device (its pty, I/O and reader sockets)
    io       SerialPort [io] port              the virtual device's I/O channel
    power    SerialPort [power] port           the virtual device's process
    reader   SerialPort [reader] port          the virtual device's reader socket
    cards    CardReaders [cards], [changer]    virtual cards on vpcd's reader
    network  Network [broker], else the rig's  the rig's broker
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hil.rig import RigConfig, RigError


@dataclass(frozen=True)
class SerialPort:
    what: str  # what is on the other end, for messages
    port: str


@dataclass(frozen=True)
class CardReaders:
    """Each test card's PC/SC reader (role -> reader name), and the changer for shared ones."""

    cards: dict[str, str]
    changer: tuple[str, int] | None = None


@dataclass(frozen=True)
class Network:
    """The broker the door reaches: the rig file's (`address`), or one the rig starts (None),
    which the rig can then stop to take the door offline."""

    address: tuple[str, int] | None = None


@dataclass(frozen=True)
class BenchResources:
    console: SerialPort
    io: SerialPort
    power: SerialPort
    reader: SerialPort
    cards: CardReaders
    site_keys: Path
    network: Network

    @classmethod
    def from_config(cls, cfg: RigConfig) -> BenchResources:
        """A bench rig file's resources (`RigConfig.load` has checked that they are named)."""
        if not (cfg.dut_port and cfg.io_port and cfg.reader_port and cfg.site_keys):
            raise RigError("a bench rig needs [dut], [io], [reader] and [site] in its rig file")
        return cls(console=SerialPort("DUT console", cfg.dut_port),
                   io=SerialPort("rig I/O board", cfg.io_port),
                   power=SerialPort("DUT power relay", cfg.power_port or cfg.io_port),
                   reader=SerialPort("DUT reader link", cfg.reader_port),
                   cards=CardReaders(dict(cfg.cards), cfg.changer),
                   site_keys=cfg.site_keys,
                   network=Network(cfg.broker))
