"""The rig's assembly: a bench rig file's resources, and a door that closes everything it
started even when a part fails to stop (the drivers themselves run in the end-to-end suite,
on the virtual rig and on the loopback bench)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.resources import BenchResources, Network
from hil.rig import RigConfig, RigError, Timings
from hil.strategy import DoorStrategy

BENCH = """kind = "bench"
[dut]
port = "/dev/ttyUSB0"
[io]
port = "/dev/ttyACM0"
[reader]
port = "/dev/ttyUSB1"
[site]
keys = "site-keys.json"
[cards]
resident = "R0"
master = "R1"
lost = "R2"
clone = "R3"
stranger = "R4"
"""


def test_a_bench_rig_files_resources(tmp_path: Path) -> None:
    rig = tmp_path / "bench.rig"
    rig.write_text(BENCH)
    res = BenchResources.from_config(RigConfig.load(rig))
    assert (res.console.port, res.io.port, res.reader.port) == ("/dev/ttyUSB0", "/dev/ttyACM0",
                                                                "/dev/ttyUSB1")
    assert res.power.port == "/dev/ttyACM0"  # the power relay on the I/O board by default
    assert res.cards.cards["stranger"] == "R4" and res.cards.changer is None
    assert res.network == Network(None)  # no [broker]: the rig starts its own
    assert res.site_keys == tmp_path / "site-keys.json"

    rig.write_text(BENCH + '[power]\nport = "/dev/ttyACM1"\n[broker]\nhost = "10.0.0.2"\nport = 1883\n')
    res = BenchResources.from_config(RigConfig.load(rig))
    assert res.power.port == "/dev/ttyACM1" and res.network.address == ("10.0.0.2", 1883)


def test_the_virtual_rigs_config_has_no_bench_resources() -> None:
    with pytest.raises(RigError, match="a bench rig needs"):
        BenchResources.from_config(RigConfig())


def test_a_door_stops_everything_it_started_in_reverse_and_reports_the_first_failure() -> None:
    door = DoorStrategy(Timings())
    stopped: list[str] = []

    def stop(name: str, fails: bool = False) -> None:
        stopped.append(name)
        if fails:
            raise RuntimeError(f"{name} would not stop")

    door.own(lambda: stop("broker"))
    door.own(lambda: stop("platform", fails=True))
    door.own(lambda: stop("device", fails=True))
    door.own(lambda: stop("reader"))
    with pytest.raises(RuntimeError, match="device would not stop"):
        door.close()
    assert stopped == ["reader", "device", "platform", "broker"]
    door.close()  # closing again stops nothing twice
    assert len(stopped) == 4
    door.own(lambda: stop("again", fails=True))
    door.close_after_failure()  # the error that stopped the door's making is the one that counts
    assert stopped[-1] == "again"
