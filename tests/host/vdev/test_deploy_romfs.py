"""`doorctl deploy --romfs` on the virtual device with the real mpremote: the application's
bytecode goes into a ROM partition (the flash simulator behind `vfs.rom_ioctl`), is proven
there and recorded, and the door runs it from /rom after a reset; a power cut during the
write leaves the door on the image it had; a damaged image is never imported."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host_tools.deploy import probe, set_files
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO

DOORCTL = str(Path(sys.executable).with_name("doorctl"))
MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def doorctl(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOORCTL, *args], capture_output=True, text=True, timeout=timeout)


def on_device(dev: VirtualDevice, program: str) -> str:
    proc = subprocess.run([MPREMOTE, "connect", dev.pty, "exec", program], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def status(dev: VirtualDevice) -> dict[str, Any]:
    io = VirtualIO(dev.io_addr)
    try:
        return io.status()
    finally:
        io.close()


def reboot(dev: VirtualDevice) -> None:
    dev.stop()
    dev.start()


def module_file(dev: VirtualDevice) -> str:
    return on_device(dev, "import firmware.door as d\nprint(d.__file__)").strip()


def record(dev: VirtualDevice) -> dict[str, Any] | None:
    """The active set's ROM record."""
    out = on_device(dev, "import json\na=json.loads(open('active.json').read())['active']\n"
                         "try:\n print(open(a+'/rom.json').read())\nexcept OSError:\n print('null')")
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.fixture
def vdev(tmp_path: Path) -> Iterator[VirtualDevice]:
    with VirtualDevice(tmp_path / "dev") as d:
        yield d


def test_romfs_deploy_runs_the_application_from_rom(vdev: VirtualDevice) -> None:
    proc = doorctl("deploy", "--port", vdev.pty, "--romfs", "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    files = manifest["files"]
    assert "/rom/firmware/main.mpy" in files and "/rom/crypto/ev2.mpy" in files
    assert not any(f.startswith(("lib/firmware/", "lib/crypto/", "lib/offline_cache/")) for f in files)
    assert "lib/board/romfs.mpy" in files  # the code that checks the image stays in lib/
    rom = manifest["rom"]
    assert rom["partition"] == 0 and rom["size"] > 10_000
    assert record(vdev) == {"partition": 0, "sha256": rom["sha256"], "size": rom["size"]}

    reboot(vdev)
    s = status(vdev)
    assert s["code"] == "rom" and s["rom_bytes"] == rom["size"] and s["ready"] is True
    assert module_file(vdev) == "/rom/firmware/door.mpy"
    # What selftest compares: every file in the manifest, the mounted image's among them.
    found = probe(vdev.pty).files
    seen = {**found, **set_files(found, "sets/a")}  # the set's files by their path in it
    assert {f: seen.get(f) for f in files} == files

    # Nothing changed: the image is not written again.
    again = doorctl("deploy", "--port", vdev.pty, "--romfs")
    assert again.returncode == 0, again.stderr
    assert "ROM image" in again.stdout and "unchanged" in again.stdout

    # A later deploy of files runs from them; the ROM set stays as the previous one.
    files_deploy = doorctl("deploy", "--port", vdev.pty, "--json")
    assert files_deploy.returncode == 0, files_deploy.stderr
    assert "lib/firmware/main.mpy" in json.loads(files_deploy.stdout)["files"]
    assert record(vdev) is None
    reboot(vdev)
    assert status(vdev)["code"] == "files"
    assert module_file(vdev) == "/flash/sets/b/lib/firmware/door.mpy"
    # The files set damaged: the door boots the previous set, from its image.
    on_device(vdev, "with open('sets/b/lib/firmware/door.mpy','ab') as f: f.write(b'x')")
    reboot(vdev)
    s = status(vdev)
    assert s["deploy_fallback"] == "previous" and s["deployed_set"] == "sets/a", s
    assert s["code"] == "rom" and module_file(vdev) == "/rom/firmware/door.mpy"


@pytest.mark.parametrize("cut_after", [1, 12, 30])  # an erase, another, a program
def test_a_power_cut_while_writing_the_image_leaves_the_one_in_use(vdev: VirtualDevice,
                                                                   cut_after: int) -> None:
    first = doorctl("deploy", "--port", vdev.pty, "--romfs", "--json")
    assert first.returncode == 0, first.stderr
    rom = json.loads(first.stdout)["rom"]
    reboot(vdev)
    assert status(vdev)["code"] == "rom"
    # The rewrite goes to partition 1, the one not in use; its flash loses power part-way.
    on_device(vdev, "import firmware.main as m\nm.running['board'].roms()[1].cut_after(%d)" % cut_after)
    cut = doorctl("deploy", "--port", vdev.pty, "--romfs", "--force-rom")
    assert cut.returncode != 0
    assert len(cut.stderr.strip().splitlines()) == 1, cut.stderr  # one line, no traceback
    vdev.restart()  # the power cut: the process is killed, the flash keeps what it got
    s = status(vdev)
    assert s["code"] == "rom" and "rom_problem" not in s, s
    assert record(vdev) == {"partition": 0, "sha256": rom["sha256"], "size": rom["size"]}
    assert module_file(vdev) == "/rom/firmware/door.mpy"
    # Deploying again completes the move to partition 1.
    again = doorctl("deploy", "--port", vdev.pty, "--romfs", "--force-rom", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["rom"]["partition"] == 1
    reboot(vdev)
    assert status(vdev)["code"] == "rom"


def test_a_damaged_image_is_not_imported(vdev: VirtualDevice) -> None:
    proc = doorctl("deploy", "--port", vdev.pty, "--romfs", "--json")
    assert proc.returncode == 0, proc.stderr
    size = json.loads(proc.stdout)["rom"]["size"]
    vdev.stop()
    img = vdev.state_dir / "rom0.img"
    data = bytearray(img.read_bytes())
    data[size // 2] ^= 0x10  # one bit, in the middle of the image
    img.write_bytes(bytes(data))
    vdev.start()
    s = status(vdev)
    assert s["code"] == "files"
    assert "does not match" in s["rom_problem"]
    assert "not running from /rom" in (vdev.state_dir / "stderr.log").read_text()
    assert not module_file(vdev).startswith("/rom/")


def test_romfs_deploy_to_a_board_without_rom_partitions_says_what_to_do(vdev: VirtualDevice) -> None:
    on_device(vdev, "from board.vdev import rom as vdev_rom\nvdev_rom.install(lambda: [])")
    proc = doorctl("deploy", "--port", vdev.pty, "--romfs")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "no ROM partition" in proc.stderr and "without --romfs" in proc.stderr
