"""Rig drivers for the end-to-end suite: one door under test, its I/O, its cards, the broker
and the reference platform, whether the door is the virtual device or a board on a bench.

    rig.toml (none: the virtual rig)
        kind = "virtual" | "bench"
        [dut]      port = "/dev/ttyUSB0"              # bench: the door's USB console
        [io]       port = "/dev/ttyACM0"              # bench: the rig I/O board (hil/rig_io_board.py)
        [power]    port = "/dev/ttyACM0"              # bench: relay channel on the same board
        [readers]  cards = ["ACS ACR122U PICC Interface 00 00"]   # PC/SC readers, by name
        [broker]   host = "127.0.0.1"  port = 1883     # bench: the broker the door uses

The virtual rig starts everything itself: mosquitto, the platform, the virtual door, pcscd
with vpcd, and presents virtual cards through the PN532 emulator bridged to the door's reader
link. Its power cut is a SIGKILL of the door's process (the flash simulator keeps exactly what
was written).
"""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.broker import Mosquitto


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
        if kind == "bench":
            for name, value in (("[dut] port", cfg.dut_port), ("[io] port", cfg.io_port)):
                if not value:
                    raise RigError(f"rig file {path}: a bench rig needs {name}")
            if not cfg.readers:
                raise RigError(f"rig file {path}: a bench rig needs [readers] cards")
        return cfg


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
    for what, port in (("DUT console", cfg.dut_port), ("rig I/O board", cfg.io_port)):
        if port is None or not os.path.exists(port):
            raise RigError(f"{what} port {port} does not exist: is it plugged in? "
                           "(ls /dev/ttyUSB* /dev/ttyACM*)")
    return select_readers(cfg.readers, reader_names())


class Timings:
    """Named timing samples gathered by the suite, for the report's timing table."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def add(self, name: str, seconds: float) -> None:
        self.samples.setdefault(name, []).append(seconds)

    def table(self) -> list[tuple[str, int, float, float, float]]:
        """(name, n, median ms, p95 ms, max ms) per timing."""
        rows = []
        for name in sorted(self.samples):
            s = sorted(self.samples[name])
            n = len(s)
            rows.append((name, n, s[n // 2] * 1000, s[min(n - 1, int(0.95 * n))] * 1000, s[-1] * 1000))
        return rows


def wait_for(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def start_broker(cfg: RigConfig) -> Mosquitto | None:
    return None if cfg.broker is not None else Mosquitto().start()


def swipe_local(io: Any, emu: Any, card: Any) -> bool:
    """Present an in-process virtual card (host_tools.cards.vcard) to a virtual door through the
    PN532 emulator until the door decides; True when its relay opened. Waits for the door to
    be idle first (LED off) and, after an opening, for the relay to drop again."""
    from host_tools.pn532_emu import LocalCard

    wait_for(lambda: io.state()["outputs"].get("led") == "off", what="the door idle")
    mark = io.set_input("rex", False)
    emu.present(LocalCard(card.process, card.uid))
    wait_for(lambda: any(e.value in ("green", "red") for e in io.outputs("led") if e.device_ms >= mark),
             what="a decision")
    emu.remove()
    opened = any(e.value for e in io.outputs("relay") if e.device_ms >= mark)
    if opened:
        wait_for(lambda: io.state()["outputs"].get("relay") is False, what="the relay to drop")
    return opened
