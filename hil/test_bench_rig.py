"""The bench rig's driver up to the hardware boundary: rig files, PC/SC readers chosen by name
(against pcscd's virtual readers here), clear errors when the DUT or a reader is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hil.rig import RigConfig, RigError, check_bench, select_readers
from host_tools.cards import pcsc

BENCH = """
kind = "bench"
[dut]
port = "{dut}"
[io]
port = "{io}"
[readers]
cards = ["Virtual PCD 00 01"]
[broker]
host = "192.168.1.10"
port = 1883
"""


def rig_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rig.toml"
    p.write_text(text)
    return p


def test_no_rig_file_is_the_virtual_rig() -> None:
    assert RigConfig.load(None).kind == "virtual"


def test_a_bench_rig_file_is_read(tmp_path: Path) -> None:
    cfg = RigConfig.load(rig_file(tmp_path, BENCH.format(dut="/dev/ttyUSB0", io="/dev/ttyACM0")))
    assert (cfg.kind, cfg.dut_port, cfg.io_port, cfg.power_port) == \
        ("bench", "/dev/ttyUSB0", "/dev/ttyACM0", "/dev/ttyACM0")
    assert cfg.readers == ["Virtual PCD 00 01"] and cfg.broker == ("192.168.1.10", 1883)


@pytest.mark.parametrize("text, message", [
    ('kind = "lab"', "kind must be virtual or bench"),
    ('kind = "bench"', "needs [dut] port"),
    ('kind = "bench"\n[dut]\nport = "/dev/x"\n[io]\nport = "/dev/y"', "needs [readers] cards"),
    ('kind = "bench"\n[readers]\ncards = "one"', "must be a list"),
    ('[broker]\nhost = "h"', "needs host (text) and port (number)"),
    ("kind = ", "rig.toml"),
])
def test_bad_rig_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RigError, match=message.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        RigConfig.load(rig_file(tmp_path, text))


def test_a_missing_rig_file() -> None:
    with pytest.raises(RigError, match="not found"):
        RigConfig.load("/nonexistent/rig.toml")


def test_readers_are_chosen_by_name_from_what_pcscd_sees(pcscd: None) -> None:
    seen = pcsc.reader_names()
    assert select_readers(["Virtual PCD 00 01"], seen) == ["Virtual PCD 00 01"]
    with pytest.raises(RigError, match="ambiguous"):
        select_readers(["Virtual PCD"], seen)
    with pytest.raises(RigError, match="'ACS ACR122U' not found; readers seen by pcscd: Virtual PCD"):
        select_readers(["ACS ACR122U"], seen)


def test_bench_checks_stop_at_a_missing_dut_and_pass_with_everything_there(
        tmp_path: Path, pcscd: None) -> None:
    master, slave = os.openpty()  # stand-ins for the DUT console and the I/O board
    try:
        tty = os.ttyname(slave)
        missing = RigConfig.load(rig_file(tmp_path, BENCH.format(dut="/dev/ttyUSB9", io=tty)))
        with pytest.raises(RigError, match="DUT console port /dev/ttyUSB9 does not exist"):
            check_bench(missing, pcsc.reader_names)
        ok = RigConfig.load(rig_file(tmp_path, BENCH.format(dut=tty, io=tty)))
        assert check_bench(ok, pcsc.reader_names) == ["Virtual PCD 00 01"]
    finally:
        os.close(master)
        os.close(slave)
