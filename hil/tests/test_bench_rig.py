"""The bench rig's driver up to the hardware boundary: rig files, PC/SC readers chosen by name
(against pcscd's virtual readers here), clear errors when the DUT or a reader is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hil.rig import RigConfig, RigError, check_bench, select_card_readers, select_readers
from host_tools.cards import pcsc

BENCH = """
kind = "bench"
[dut]
port = "{dut}"
[io]
port = "{io}"
[reader]
port = "{io}"
[site]
keys = "site-keys.json"
[cards]
resident = "Virtual PCD 00 00"
master = "Virtual PCD 00 01"
lost = "Virtual PCD 00 00"
clone = "Virtual PCD 00 01"
stranger = "Virtual PCD 00 00"
[changer]
addr = "127.0.0.1:7300"
[broker]
host = "192.168.1.10"
port = 1883
"""
NEEDS_ALL = ('kind = "bench"\n[dut]\nport = "/dev/x"\n[io]\nport = "/dev/y"\n[reader]\n'
             'port = "/dev/z"\n[site]\nkeys = "k.json"\n')
CARDS = ('[cards]\nresident = "A"\nmaster = "B"\nlost = "C"\nclone = "D"\nstranger = "E"\n')


def rig_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rig.toml"
    p.write_text(text)
    return p


def test_no_rig_file_is_the_virtual_rig() -> None:
    assert RigConfig.load(None).kind == "virtual"


def test_a_bench_rig_file_is_read(tmp_path: Path) -> None:
    cfg = RigConfig.load(rig_file(tmp_path, BENCH.format(dut="/dev/ttyUSB0", io="/dev/ttyACM0")))
    assert (cfg.kind, cfg.dut_port, cfg.io_port, cfg.power_port, cfg.reader_port) == \
        ("bench", "/dev/ttyUSB0", "/dev/ttyACM0", "/dev/ttyACM0", "/dev/ttyACM0")
    assert cfg.readers == ["Virtual PCD 00 00", "Virtual PCD 00 01"]
    assert cfg.broker == ("192.168.1.10", 1883) and cfg.changer == ("127.0.0.1", 7300)
    assert cfg.site_keys == tmp_path / "site-keys.json"  # beside the rig file
    assert cfg.cards["clone"] == "Virtual PCD 00 01" and len(cfg.cards) == 5


@pytest.mark.parametrize("text, message", [
    ('kind = "lab"', "kind must be virtual or bench"),
    ('kind = "bench"', "needs [dut] port"),
    ('kind = "bench"\n[dut]\nport = "/dev/x"\n[io]\nport = "/dev/y"', "needs [reader] port"),
    (NEEDS_ALL, "needs [cards]: the PC/SC reader each test card sits on"),
    (NEEDS_ALL + '[cards]\nresident = "A"', "names no reader for master, lost, clone, stranger"),
    (NEEDS_ALL + CARDS + 'visitor = "F"', "visitor: not a test card"),
    (NEEDS_ALL + CARDS.replace('"E"', '"A"'), "cards resident and stranger both sit on reader 'A'"),
    (NEEDS_ALL + CARDS + '[changer]\naddr = "rig-host"', "[changer] addr must be HOST:PORT"),
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
    assert select_card_readers({"resident": "Virtual PCD 00 00", "clone": "Virtual PCD 00 01"},
                               seen) == {"resident": "Virtual PCD 00 00", "clone": "Virtual PCD 00 01"}


def test_bench_checks_stop_at_a_missing_dut_and_pass_with_everything_there(
        tmp_path: Path, pcscd: None) -> None:
    master, slave = os.openpty()  # stand-ins for the DUT console and the I/O board
    try:
        tty = os.ttyname(slave)
        missing = RigConfig.load(rig_file(tmp_path, BENCH.format(dut="/dev/ttyUSB9", io=tty)))
        with pytest.raises(RigError, match="DUT console port /dev/ttyUSB9 does not exist"):
            check_bench(missing, pcsc.reader_names)
        ok = RigConfig.load(rig_file(tmp_path, BENCH.format(dut=tty, io=tty)))
        assert check_bench(ok, pcsc.reader_names) == ["Virtual PCD 00 00", "Virtual PCD 00 01"]
        no_link = RigConfig.load(rig_file(tmp_path, BENCH.format(dut=tty, io=tty)
                                          .replace(f'[reader]\nport = "{tty}"',
                                                   '[reader]\nport = "/dev/ttyUSB8"')))
        with pytest.raises(RigError, match="DUT reader link port /dev/ttyUSB8 does not exist"):
            check_bench(no_link, pcsc.reader_names)
    finally:
        os.close(master)
        os.close(slave)
