"""A journal that overflowed while the platform was away delivers again by itself, and the loss
reaches the platform as a gap of the exact size: real mosquitto, the real device code under
MicroPython on the flash simulator, the real platform ingest (docs/protocol.md, "Resend
requests")."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from board.vdev.flashsim import FlashSim
from firmware.journal import Journal
from host_tools.mpy_build import build_device_tree
from host_tools.paths import REPO_ROOT, micropython, micropython_env
from host_tools.services.mosquitto import Mosquitto
from reference_platform.ingest import Platform
from reference_platform.store import Store

DEVICE = REPO_ROOT / "host_tools" / "benchmarks" / "device" / "uplink_device.py"
BLOCKS = 8  # 6 data sectors of 127 records: the ring holds 635 events
HEAP = "128K"  # journal + uplink with signed acks and times, bounded inbound (uplink.HEAP says why)
ID = "site.b1.d1"
T0 = 1767225600  # uplink_device.py: event i carries UTC T0 + i


class Door:
    """The virtual door's process, its output read as it comes."""

    def __init__(self, image: Path, broker: Mosquitto, count: int, boot: int, pace_ms: int = 0,
                 *options: str) -> None:
        env = micropython_env(build_device_tree()[0].parents[1])
        # With a key, the key store's bytecode (AES, CMAC: loaded for the cards on a real
        # door) shares the unix port's heap too.
        heap = "136K" if any(o.startswith("key=") for o in options) else HEAP
        self.proc = subprocess.Popen(
            [micropython(), "-X", f"heapsize={heap}", str(DEVICE), str(image), str(BLOCKS),
             broker.host, str(broker.port), ID, str(boot), str(count), str(pace_ms), *options],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=image.parent)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def output(self) -> str:
        return "\n".join(self.lines)

    def finish(self, timeout: float = 120, drained: bool = True) -> str:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the door did not drain its journal:\n"
                                 + self.output()[-3000:]) from None
        self._reader.join(5)
        assert self.proc.returncode == 0, self.output()
        assert not drained or any(x.startswith("DRAINED") for x in self.lines), self.output()
        return self.output()

    def kill(self) -> None:
        """A power cut: SIGKILL, the flash image keeps what was programmed."""
        self.proc.kill()
        self.proc.wait()
        self._reader.join(5)


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


def wait_until(cond, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def on_flash(image: Path, tmp: Path) -> tuple[int, int]:
    """(oldest, newest) sequence number the door's journal holds (read from a copy)."""
    copy = tmp / "inspect.img"
    shutil.copyfile(image, copy)
    j = Journal(FlashSim(path=str(copy), block_size=4096, block_count=BLOCKS))
    return j.oldest_seq(), j.next_seq - 1


def assert_all_delivered_or_reported(store: Store, newest: int) -> list[dict[str, object]]:
    """Every event 1..newest is stored once, in order, or inside a reported gap; nothing else."""
    seqs = [e[0] for e in store.events(ID)]
    assert seqs == sorted(set(seqs))
    lost = store.lost(ID)
    reported = {s for g in lost for s in range(int(g["first"]), int(g["last"]) + 1)}  # type: ignore[call-overload]
    assert not reported & set(seqs)
    assert reported | set(seqs) == set(range(1, newest + 1))
    assert store.ack_upto(ID) == newest
    assert store.missing(ID) == []
    return lost


def test_overflow_before_the_platform_ever_saw_the_door(tmp_path: Path, broker: Mosquitto) -> None:
    """The door filled its ring more than twice over while nothing received: once the
    platform is there, the survivors arrive and events 1..oldest-1 are one reported gap."""
    image = tmp_path / "flash.img"
    Door(image, broker, 1500, 1, 0, "fill-only").finish(drained=False)  # appends, never connects
    oldest, newest = on_flash(image, tmp_path)
    assert oldest > 1  # it did overflow
    with Platform(Store(str(tmp_path / "p.db")), broker.host, broker.port) as platform:
        Door(image, broker, 0, 2).finish()
        lost = assert_all_delivered_or_reported(platform.store, newest)
        assert [(g["first"], g["last"], g["count"]) for g in lost] == [(1, oldest - 1, oldest - 1)]
        # The loss lies before the first surviving event with a time (a gap event has none).
        first_timed = next(e for e in platform.store.events(ID) if e[5] & 1)
        assert first_timed[0] <= oldest + 1
        assert lost[0]["after"] is None and lost[0]["before"] == first_timed[3]
        assert platform.resend_requests >= 1


def test_overflow_while_the_platform_is_away_then_it_returns(tmp_path: Path,
                                                            broker: Mosquitto) -> None:
    """Delivering, the platform goes away, the ring overflows, the platform returns: the door
    delivers again without a restart and the platform records exactly what was lost."""
    image = tmp_path / "flash.img"
    db = str(tmp_path / "p.db")
    # Anonymous platforms: the broker keeps nothing for them while they are away.
    first = Platform(Store(db), broker.host, broker.port).start()
    door = Door(image, broker, 2000, 1, 1)
    wait_until(lambda: first.store.count(ID) > 100)
    first.stop()
    # All 2000 appended (more than three rings' worth) before the platform returns.
    wait_until(lambda: sum(x.startswith("APPENDED") for x in door.lines) == 2000
               or door.proc.poll() is not None, 120)
    with Platform(Store(db), broker.host, broker.port) as again:
        out = door.finish()
        _, newest = on_flash(image, tmp_path)
        lost = assert_all_delivered_or_reported(again.store, newest)
        door_lost = int(out.split(" lost ")[1].split()[0])
        reported = sum(int(g["count"]) for g in lost)  # type: ignore[call-overload]
        # The door counts what it overwrote unacknowledged; some of that the platform had
        # stored before it went (its acks did not come back): the platform reports the rest.
        assert 0 < reported <= door_lost


def test_the_gap_survives_a_power_cut_before_the_platform_returns(tmp_path: Path,
                                                                 broker: Mosquitto) -> None:
    """The ring overflows with the platform away, the door is power-cycled twice (once while
    it was sending to a broker with no platform behind it), then the platform returns."""
    image = tmp_path / "flash.img"
    db = str(tmp_path / "p.db")
    with Platform(Store(db), broker.host, broker.port, client_id="platform-a") as platform:
        Door(image, broker, 200, 1).finish()  # delivered and acknowledged
        assert platform.store.ack_upto(ID) == 200
    Door(image, broker, 1500, 2, 0, "fill-only").finish(drained=False)  # overflow, platform away
    oldest, newest = on_flash(image, tmp_path)
    assert oldest > 201
    sending = Door(image, broker, 0, 3)
    time.sleep(3.0)  # it connects and sends; nothing acknowledges
    sending.kill()
    with Platform(Store(db), broker.host, broker.port, client_id="platform-a") as again:
        Door(image, broker, 0, 4).finish()
        lost = assert_all_delivered_or_reported(again.store, newest)
        assert [(g["first"], g["last"]) for g in lost] == [(201, oldest - 1)]
        first_timed = next(e for e in again.store.events(ID) if e[0] > 200 and e[5] & 1)
        assert first_timed[0] <= oldest + 1
        assert lost[0]["after"] == T0 + 199 and lost[0]["before"] == first_timed[3]
