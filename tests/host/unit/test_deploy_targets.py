"""What `doorctl deploy` sends to each kind of device, and the .mpy version check."""

from __future__ import annotations

import pytest

from host_tools.deploy import (
    TARGETS,
    DeviceInfo,
    check_mpy_compatible,
    local_files,
    stale_files,
    target_for,
)
from host_tools.errors import EXIT_MISSING_TOOL, UserError
from host_tools.mpy_build import DEFAULT_BUILD_DIR


def test_esp32_gets_its_board_and_a_boot_entry_but_not_the_virtual_board() -> None:
    target = target_for("esp32")
    files = local_files(target)
    assert "lib/board/esp32_ref.mpy" in files and "lib/firmware/main.mpy" in files
    for host_part in ("virtual", "rawrepl", "flashsim", "vdev_boot", "vdev_lib", "esp32_main"):
        assert not any(host_part in f for f in files), host_part
    assert target.boot_main is not None and target.boot_main.name == "esp32_main.py"
    assert "from board.esp32_ref import main" in target.boot_main.read_text()


def test_virtual_device_gets_the_virtual_board_only() -> None:
    files = local_files(TARGETS["linux"])
    assert "lib/board/virtual.mpy" in files and "lib/board/flashsim.mpy" in files
    assert "lib/board/esp32_ref.mpy" not in files
    assert TARGETS["linux"].boot_main is None


def test_an_unknown_port_gets_every_board_and_no_boot_entry() -> None:
    target = target_for("rp2")
    files = local_files(target)
    assert {"lib/board/esp32_ref.mpy", "lib/board/virtual.mpy"} <= set(files)
    assert target.boot_main is None


def _sample() -> bytes:
    local_files(target_for("linux"))  # builds the tree
    return (DEFAULT_BUILD_DIR / "firmware" / "main.mpy").read_bytes()


def test_mpy_version_of_the_device_must_match_mpy_cross() -> None:
    sample = _sample()
    written = sample[1]
    check_mpy_compatible(DeviceInfo("esp32", written | (3 << 8), ""), sample)  # sub-version ok
    with pytest.raises(UserError) as e:
        check_mpy_compatible(DeviceInfo("esp32", written - 1, ""), sample)
    assert e.value.exit_code == EXIT_MISSING_TOOL
    assert f"reads .mpy version {written - 1}" in str(e.value)
    assert f"writes version {written}" in str(e.value)
    with pytest.raises(UserError) as e:
        check_mpy_compatible(DeviceInfo("esp32", 0, ""), sample)
    assert "does not report" in str(e.value)


def test_only_files_of_our_packages_are_stale() -> None:
    deployed = {"lib/firmware/old.mpy": "a", "lib/firmware/main.mpy": "b",
                "lib/umqtt/simple.py": "c", "lib/boardx/y.mpy": "d", "main.py": "e"}
    want = {"lib/firmware/main.mpy": "b"}
    assert stale_files(deployed, want) == ["lib/firmware/old.mpy"]
