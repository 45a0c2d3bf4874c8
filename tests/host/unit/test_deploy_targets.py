"""What `doorctl deploy` sends to each kind of device, and the .mpy version check."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_tools.boards import read_board
from host_tools.deploy import (
    DeviceInfo,
    board_for,
    check_mpy_compatible,
    firmware_version,
    local_files,
    stale_files,
)
from host_tools.errors import EXIT_MISSING_TOOL, UserError
from host_tools.mpy_build import DEFAULT_BUILD_DIR
from host_tools.paths import REPO_ROOT


def test_the_manifest_version_is_the_firmware_s_own_read_without_importing_it(tmp_path: Path) -> None:
    import firmware  # the test may import it; deploy reads the source instead

    assert firmware_version() == firmware.VERSION
    (tmp_path / "firmware").mkdir()
    (tmp_path / "firmware" / "__init__.py").write_text('"""x"""\nVERSION = "9.8.7"\n')
    assert firmware_version(tmp_path) == "9.8.7"
    (tmp_path / "firmware" / "__init__.py").write_text("VERSION = 3\n")
    with pytest.raises(ValueError, match="sets no VERSION string"):
        firmware_version(tmp_path)


def test_esp32_gets_its_board_and_a_boot_entry_but_not_the_virtual_board() -> None:
    board = board_for("esp32")
    files = local_files(board)
    assert "lib/board/esp32_ref.mpy" in files and "lib/firmware/main.mpy" in files
    assert "lib/board/romfs.mpy" in files
    for host_part in ("virtual", "rawrepl", "flashsim", "vdev", "esp32_main", "mcu_qemu"):
        assert not any(host_part in f for f in files), host_part
    assert board.name == "esp32-ref" and board.entry == "board/esp32_main.py"
    assert "from board.esp32_ref import main" in (REPO_ROOT / board.entry).read_text()


def test_virtual_device_gets_the_virtual_board_only() -> None:
    board = board_for("linux")
    files = local_files(board)
    assert "lib/board/virtual.mpy" in files and "lib/board/vdev/flashsim.mpy" in files
    assert "lib/board/vdev/rawrepl.mpy" in files  # its console comes from the deployed set
    # Its boot script and `machine` run from the host's copy, before any set is mounted.
    assert "lib/board/vdev/boot.mpy" not in files and not any("/vdev/lib/" in f for f in files)
    assert "lib/board/esp32_ref.mpy" not in files and "lib/board/mcu_qemu.mpy" not in files
    assert board.entry is None


def test_what_a_device_gets_is_what_its_board_declares() -> None:
    for module in ("esp32_ref", "virtual"):
        board = read_board(module)
        assert board is not None
        files = local_files(board)
        declared = {"lib/" + f[:-3] + ".mpy" for f in board.files()}
        assert set(files) == declared
        assert {f"lib/board/{module}.mpy", "lib/board/interface.mpy",
                "lib/board/__init__.mpy"} <= set(files)
        for pkg in board.packages:
            assert f"lib/{pkg}/__init__.mpy" in files


def test_an_unknown_port_gets_a_clear_line_not_every_board() -> None:
    with pytest.raises(UserError) as e:
        board_for("rp2", port="/dev/ttyACM0")
    assert str(e.value).startswith("no board runs on rp2 (the device on /dev/ttyACM0)")
    assert "PLATFORM = 'rp2'" in str(e.value)


def test_a_chosen_board_must_run_on_the_device() -> None:
    assert board_for("esp32", "esp32-ref").module == "esp32_ref"
    assert board_for("esp32", "esp32_ref").name == "esp32-ref"
    with pytest.raises(UserError) as e:
        board_for("linux", "esp32-ref", port="/dev/pts/9")
    assert "board esp32-ref runs on esp32, the device on /dev/pts/9 on linux" in str(e.value)
    with pytest.raises(UserError) as e:
        board_for("linux", "nosuch")
    assert "no board 'nosuch'" in str(e.value) and "virtual" in str(e.value)


def _sample() -> bytes:
    local_files(board_for("linux"))  # builds the tree
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
