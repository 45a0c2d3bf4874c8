"""The ESP32 image: its partition table as the bootloader reads it, its manifest, and what
`doorctl flash --image` writes with which esptool commands. (The image itself needs ESP-IDF's
Xtensa toolchain, which is not available here: docs/deploy.md.)"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.errors import UserError
from host_tools.image import esp32
from host_tools.image import partitions as pt
from host_tools.image.source import vendored_tarball
from host_tools.paths import REPO_ROOT

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
BOARD = REPO_ROOT / "board" / "esp32"


def test_board_table_is_the_binary_the_bootloader_reads() -> None:
    table = pt.board_table()
    assert len(table) == 0xC00
    # nvs first: magic, type data, subtype nvs, offset 0x9000, size 0x6000, name, flags
    assert table[:32] == (b"\xaa\x50\x01\x02" + (0x9000).to_bytes(4, "little")
                          + (0x6000).to_bytes(4, "little") + b"nvs".ljust(16, b"\0") + bytes(4))
    parts = pt.from_binary(table)
    n = len(parts)
    md5_entry = table[32 * n:32 * n + 32]
    assert md5_entry[:2] == b"\xeb\xeb" and md5_entry[2:16] == b"\xff" * 14
    assert md5_entry[16:] == hashlib.md5(table[:32 * n]).digest()
    assert set(table[32 * n + 32:]) == {0xFF}
    by_name = {p.name: p for p in parts}
    assert by_name["factory"].type == 0 and by_name["factory"].offset == esp32.APP_OFFSET
    assert by_name["vfs"].subtype == 0x81 and by_name["journal"].subtype == 0x40
    assert by_name["romfs"].subtype == 0x8F and by_name["romfs2"].subtype == 0x8F


@pytest.mark.parametrize(("csv", "why"), [
    ("a, data, nvs, 0x9000, 0x6000\nfactory, app, factory, 0x10000, 0x100000\n"
     "b, data, fat, 0x100000, 0x1000\n", "overlaps"),
    ("factory, app, factory, 0x11000, 0x100000\n", "not aligned"),
    ("factory, app, factory, 0x10000, 0x1000000\n", "beyond the 16 MB"),
    ("nvs, data, nvs, 0x9000, 0x6000\n", "no app partition"),
    ("a-name-longer-than-16, app, factory, 0x10000, 0x1000\n", "1..16 bytes"),
    ("factory, app, factory, 0x10000, lots\n", "not a number"),
    ("factory, app, factory, 0x8000, 0x10000\n", "not aligned"),
])
def test_a_table_the_bootloader_would_not_take_is_refused(csv: str, why: str) -> None:
    with pytest.raises(UserError, match=why):
        pt.parse_csv(csv)


def test_a_corrupted_table_is_not_read_as_one() -> None:
    table = bytearray(pt.board_table())
    table[40] ^= 1
    with pytest.raises(UserError, match="MD5"):
        pt.from_binary(bytes(table))


def _firmware_bin(table: bytes, app_size: int = 4096) -> bytes:
    boot = b"\xe9" + bytes(2000)
    app = b"\xe9" + bytes(app_size - 1)
    data = boot.ljust(pt.TABLE_OFFSET - esp32.BOOTLOADER_OFFSET, b"\xff") + table
    return data.ljust(esp32.APP_OFFSET - esp32.BOOTLOADER_OFFSET, b"\xff") + app


def test_an_image_is_written_as_bootloader_table_and_application(tmp_path: Path) -> None:
    table = pt.board_table()
    regions = esp32.split_image(_firmware_bin(table), table)
    assert [(r.name, r.offset) for r in regions] == [
        ("bootloader", 0x1000), ("partition table", 0x8000), ("application", 0x10000)]
    assert regions[1].data == table and regions[2].data[:1] == b"\xe9"
    files = esp32.write_files(regions, tmp_path)
    write, verify = esp32.esptool_commands("/dev/ttyUSB0", 460800, files)
    pairs = ["0x1000", str(files[0][1]), "0x8000", str(files[1][1]), "0x10000", str(files[2][1])]
    assert write == ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800",
                     "write-flash", "--flash-size", "16MB", *pairs]
    assert verify == ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800",
                      "verify-flash", *pairs]
    assert files[1][1].read_bytes() == table


def test_an_image_built_for_another_layout_is_refused() -> None:
    other = pt.to_binary(pt.parse_csv("nvs, data, nvs, 0x9000, 0x6000\n"
                                      "factory, app, factory, 0x10000, 0x1F0000\n"))
    with pytest.raises(UserError, match="another partition table"):
        esp32.split_image(_firmware_bin(other), pt.board_table())
    with pytest.raises(UserError, match="larger than its partition"):
        esp32.split_image(_firmware_bin(pt.board_table(), 0x200000), pt.board_table())
    with pytest.raises(UserError, match="not an ESP32 firmware image"):
        esp32.split_image(b"hello", pt.board_table())


def _doorctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOORCTL, *args], capture_output=True, text=True, timeout=60)


def test_flash_image_stops_with_one_line_before_touching_a_board(tmp_path: Path) -> None:
    good = tmp_path / "firmware.bin"
    good.write_bytes(_firmware_bin(pt.board_table()))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xe9 not really")
    r = _doorctl("flash", "-p", "/dev/ttyUSB9", "--image", str(junk))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not an ESP32 firmware" in r.stderr
    r = _doorctl("flash", "-p", "/dev/ttyUSB9", "--image", str(good))
    assert r.returncode == 3 and "port /dev/ttyUSB9 does not exist" in r.stderr
    r = _doorctl("flash", "-p", "/dev/ttyUSB9", "--image", str(good), "--firmware", str(good))
    assert r.returncode == 2 and "give one of --image" in r.stderr
    r = _doorctl("flash", "-p", "/dev/ttyUSB9")
    assert r.returncode == 2 and "give one of --image" in r.stderr
    r = _doorctl("flash", "-p", "/dev/ttyUSB9", "--image", str(tmp_path / "missing.bin"))
    assert r.returncode == 2 and "cannot be read" in r.stderr


def test_board_definition_names_the_shared_table_and_manifest() -> None:
    cmake = (BOARD / "mpconfigboard.cmake").read_text()
    assert "${MICROPY_BOARD_DIR}/../esp32_partitions.csv" in cmake
    assert "${MICROPY_BOARD_DIR}/manifest.py" in cmake
    assert "${MICROPY_BOARD_DIR}/sdkconfig.board" in cmake
    assert "CONFIG_ESPTOOLPY_FLASHSIZE_16MB=y" in (BOARD / "sdkconfig.board").read_text()
    # The shared manifest freezes what board/esp32_ref.py declares (host_tools/boards.py).
    assert 'include("../manifest.py", board="esp32_ref")' in (BOARD / "manifest.py").read_text()


def test_board_definition_builds_the_shared_c_modules() -> None:
    # The ESP32 image takes the same aes128 module as unix32 and mcu (crypto/aes.py): a CMake
    # list that names every shared module's own CMake file.
    cmake = (BOARD / "mpconfigboard.cmake").read_text()
    assert "set(USER_C_MODULES ${MICROPY_BOARD_DIR}/../cmodules/micropython.cmake)" in cmake
    shared = BOARD.parent / "cmodules"
    listed = (shared / "micropython.cmake").read_text()
    folders = sorted(p.parent for p in shared.glob("*/micropython.cmake"))
    assert [f.name for f in folders] == ["doorcrypto"]
    for folder in folders:
        assert "${CMAKE_CURRENT_LIST_DIR}/%s/micropython.cmake" % folder.name in listed
        cmake = (folder / "micropython.cmake").read_text()
        for source in sorted(folder.glob("*.c")):  # every source the make-built images take
            assert "${CMAKE_CURRENT_LIST_DIR}/%s" % source.name in cmake


@pytest.mark.skipif(not (os.environ.get("MICROPY_SRC") or vendored_tarball()),
                    reason="no MicroPython v1.28.0 source here")
def test_esp32_manifest_freezes_the_application_the_board_and_main() -> None:
    from host_tools.image.source import micropython_source
    from host_tools.image.steps import Steps

    tree = micropython_source(Steps(quiet=True))
    sys.path.insert(0, str(tree / "tools"))
    try:
        import manifestfile
    finally:
        sys.path.pop(0)
    m = manifestfile.ManifestFile(manifestfile.MODE_FREEZE, {
        "MPY_DIR": str(tree), "MPY_LIB_DIR": str(tree / "lib" / "micropython-lib"),
        "PORT_DIR": str(tree / "ports" / "esp32"), "BOARD_DIR": str(BOARD)})
    cwd = os.getcwd()
    try:
        m.execute(str(BOARD / "manifest.py"))
    finally:
        os.chdir(cwd)
    frozen = {f.target_path for f in m.files()}
    for path in ("main.py", "firmware/main.py", "firmware/uplink.py", "crypto/ev2.py",
                 "offline_cache/cache.py", "board/esp32_ref.py", "board/esp32_main.py",
                 "board/interface.py", "board/romfs.py", "asyncio/core.py"):
        assert path in frozen
    assert "board/virtual.py" not in frozen and "board/vdev/flashsim.py" not in frozen
