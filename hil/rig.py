"""Rig drivers for the end-to-end suite: one door under test, its I/O, its cards, the broker
and the reference platform, whether the door is the virtual device or a board on a bench.

    rig.toml (none: the virtual rig)
        kind = "virtual" | "bench"
        [dut]      port = "/dev/ttyUSB0"              # bench: the door's USB console
        [io]       port = "/dev/ttyACM0"              # bench: the rig I/O board (hil/board/rig_io.py)
        [power]    port = "/dev/ttyACM0"              # bench: relay channel on the same board
        [reader]   port = "/dev/ttyUSB1"              # bench: USB-serial wired to the DUT's reader UART
        [site]     keys = "site-keys.json"            # bench: the site key file the cards carry
        [cards]    resident = "ACS ACR122U 00 00" ... # bench: the PC/SC reader each test card sits on
        [changer]  addr = "127.0.0.1:7300"            # bench, optional: puts a card on a shared reader
        [broker]   host = "127.0.0.1"  port = 1883     # bench: the broker the door uses

The virtual rig starts everything itself: the broker (mosquitto, or RabbitMQ with
`--broker rabbitmq`: host_tools/services/brokers.py), the platform, the virtual door, pcscd
with vpcd, and presents virtual cards through the PN532 emulator bridged to the door's reader
link. Its power cut is a SIGKILL of the door's process (the flash simulator keeps exactly what
was written).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# The suite's and the drivers' wait (shared with the torture run and the vdev tests).
from host_tools.vdev.swipe import wait_for as wait_for

# The door timings every rig commissions (short, so the alarms come within a test).
DOOR_TIMINGS = {"unlock_ms": 1500, "prealarm_ms": 1500, "held_open_ms": 2500, "deny_ms": 400}
DEVICE = "hil.b1.d1"
# The test cards, by role: three on the door's whitelist, a clone of the resident's card and a
# card of another site.
CARD_ROLES = ("resident", "master", "lost", "clone", "stranger")


class RigError(RuntimeError):
    """The rig cannot run: a missing DUT, reader or tool, or a bad rig file."""


@dataclass
class RigConfig:
    kind: str = "virtual"
    dut_port: str | None = None
    io_port: str | None = None
    power_port: str | None = None
    readers: list[str] = field(default_factory=list)
    broker: tuple[str, int] | None = None
    reader_port: str | None = None  # bench: host serial port wired to the DUT's reader UART
    site_keys: Path | None = None  # bench: the site key file the test cards were issued with
    cards: dict[str, str] = field(default_factory=dict)  # bench: card role -> PC/SC reader name
    changer: tuple[str, int] | None = None  # bench: service that puts a card on a shared reader

    @classmethod
    def load(cls, path: str | Path | None) -> RigConfig:
        if path is None:
            return cls()
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise RigError(f"rig file {path} not found") from None
        except tomllib.TOMLDecodeError as e:
            raise RigError(f"rig file {path}: {e}") from None
        kind = data.get("kind", "virtual")
        if kind not in ("virtual", "bench"):
            raise RigError(f"rig file {path}: kind must be virtual or bench, not {kind!r}")
        cfg = cls(kind=kind)
        cfg.dut_port = data.get("dut", {}).get("port")
        cfg.io_port = data.get("io", {}).get("port")
        cfg.power_port = data.get("power", {}).get("port", cfg.io_port)
        readers = data.get("readers", {}).get("cards", [])
        if not isinstance(readers, list) or not all(isinstance(r, str) for r in readers):
            raise RigError(f"rig file {path}: [readers] cards must be a list of reader names")
        cfg.readers = readers
        b = data.get("broker")
        if b is not None:
            if not isinstance(b.get("host"), str) or not isinstance(b.get("port"), int):
                raise RigError(f"rig file {path}: [broker] needs host (text) and port (number)")
            cfg.broker = (b["host"], b["port"])
        cfg.reader_port = data.get("reader", {}).get("port")
        keys = data.get("site", {}).get("keys")
        if keys is not None:
            cfg.site_keys = Path(path).parent / keys
        cfg.cards = _cards(path, data.get("cards", {}))
        changer = data.get("changer", {}).get("addr")
        if changer is not None:
            cfg.changer = _addr(path, "[changer] addr", changer)
        if cfg.cards and not cfg.readers:
            cfg.readers = list(dict.fromkeys(cfg.cards.values()))
        if kind == "bench":
            for name, value in (("[dut] port", cfg.dut_port), ("[io] port", cfg.io_port),
                                ("[reader] port", cfg.reader_port), ("[site] keys", keys)):
                if not value:
                    raise RigError(f"rig file {path}: a bench rig needs {name}")
            if not cfg.cards:
                raise RigError(f"rig file {path}: a bench rig needs [cards]: the PC/SC reader "
                               f"each test card sits on ({', '.join(CARD_ROLES)})")
            _check_cards(path, cfg.cards, cfg.changer is not None)
        return cfg


def _addr(path: str | Path, what: str, text: Any) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not isinstance(text, str) or not sep or not host or not port.isdigit():
        raise RigError(f"rig file {path}: {what} must be HOST:PORT, not {text!r}")
    return host, int(port)


def _cards(path: str | Path, table: Any) -> dict[str, str]:
    if not isinstance(table, dict):
        raise RigError(f"rig file {path}: [cards] must be a table of role = \"reader name\"")
    for role, reader in table.items():
        if role not in CARD_ROLES:
            raise RigError(f"rig file {path}: [cards] {role}: not a test card "
                           f"(the cards are {', '.join(CARD_ROLES)})")
        if not isinstance(reader, str) or not reader:
            raise RigError(f"rig file {path}: [cards] {role} must be a PC/SC reader name")
    return dict(table)


def _check_cards(path: str | Path, cards: dict[str, str], changer: bool) -> None:
    missing = [r for r in CARD_ROLES if r not in cards]
    if missing:
        raise RigError(f"rig file {path}: [cards] names no reader for {', '.join(missing)}")
    if changer:
        return
    by_reader: dict[str, list[str]] = {}
    for role, reader in cards.items():
        by_reader.setdefault(reader, []).append(role)
    for reader, roles in by_reader.items():
        if len(roles) > 1:
            raise RigError(f"rig file {path}: cards {' and '.join(roles)} both sit on reader "
                           f"{reader!r}: a reader holds one card; give each card its own reader "
                           "or add a [changer] that puts the right one on it")


def select_card_readers(cards: dict[str, str], available: list[str]) -> dict[str, str]:
    """Each card role's PC/SC reader, by its full name (exact name or unique prefix)."""
    roles = list(cards)
    return dict(zip(roles, select_readers([cards[r] for r in roles], available), strict=True))


def select_readers(wanted: list[str], available: list[str]) -> list[str]:
    """The PC/SC readers named in the rig file (exact name or a unique prefix), in order."""
    chosen = []
    for name in wanted:
        exact = [r for r in available if r == name]
        matches = exact or [r for r in available if r.startswith(name)]
        if not matches:
            raise RigError(f"card reader {name!r} not found; readers seen by pcscd: "
                           f"{', '.join(available) or 'none'}")
        if len(matches) > 1:
            raise RigError(f"card reader {name!r} is ambiguous: {', '.join(matches)}")
        chosen.append(matches[0])
    return chosen


def check_bench(cfg: RigConfig, reader_names: Callable[[], list[str]]) -> list[str]:
    """Everything a bench rig needs is there: the DUT and I/O board ports and the readers.
    Returns the readers' full names. (The bench I/O itself is driven over the I/O board's
    serial protocol, docs/hil.md.)"""
    ports = [("DUT console", cfg.dut_port), ("rig I/O board", cfg.io_port)]
    if cfg.reader_port is not None:
        ports.append(("DUT reader link", cfg.reader_port))
    for what, port in ports:
        if port is None or not os.path.exists(port):
            raise RigError(f"{what} port {port} does not exist: is it plugged in? "
                           "(ls /dev/ttyUSB* /dev/ttyACM*)")
    return select_readers(cfg.readers, reader_names())


class OutputChange(Protocol):
    """A door output's change as the rig saw it: `device_ms` on the rig's clock (the virtual
    device's ticks, the I/O board's microsecond clock), `host_s` the host's monotonic time."""

    @property
    def name(self) -> str: ...
    @property
    def value(self) -> Any: ...
    @property
    def device_ms(self) -> float: ...
    @property
    def host_s(self) -> float: ...


class DoorIO(Protocol):
    """The door's inputs and outputs, rig-neutral: inputs `door_contact` (closed, open, short,
    cut), `rex`, `tamper`, `fire`; outputs `relay` (bool), `led` (off, green, red, amber)."""

    def set_input(self, name: str, value: Any) -> float:
        """Set an input; the rig clock's time (ms) when it took effect."""
        ...

    def wait_output(self, name: str, value: Any, timeout_s: float = 10.0,
                    after_ms: float | None = None) -> OutputChange: ...


class Door(Protocol):
    """One commissioned door under test and the site around it, on any rig."""

    refs: dict[str, bytes]
    platform: Any  # reference_platform.ingest.Platform
    broker: Any  # host_tools.services.brokers.RigBroker the rig started, None for the rig file's `[broker]`
    site: Any  # host_tools.cards.kit.SiteKit
    device_id: str
    can_cut_network: bool

    @property
    def io(self) -> DoorIO: ...

    def swipe(self, name: str) -> bool: ...
    def reboot(self, cut: bool = True) -> None: ...
    def power_cut(self) -> None: ...
    def network(self, up: bool) -> None: ...
    def state(self) -> dict[str, Any]: ...
    def events(self, code: int | None = None) -> list[tuple[Any, ...]]: ...
    def wait_event(self, code: int, count: int = 1, timeout: float = 20.0) -> float: ...
    def revoke(self, name: str, status: int = ...) -> None: ...
    def close(self) -> None: ...


class Timings:
    """Named timing samples gathered by the suite, for the report's timing table."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def add(self, name: str, seconds: float) -> None:
        self.samples.setdefault(name, []).append(seconds)

    def take(self) -> dict[str, list[float]]:
        """The samples gathered so far, handed over and forgotten here."""
        taken, self.samples = self.samples, {}
        return taken

    def merge(self, samples: dict[str, list[float]]) -> None:
        for name, values in samples.items():
            self.samples.setdefault(name, []).extend(values)

    def table(self) -> list[tuple[str, int, float, float, float]]:
        """(name, n, median ms, p95 ms, max ms) per timing."""
        rows = []
        for name in sorted(self.samples):
            s = sorted(self.samples[name])
            n = len(s)
            rows.append((name, n, s[n // 2] * 1000, s[min(n - 1, int(0.95 * n))] * 1000, s[-1] * 1000))
        return rows
