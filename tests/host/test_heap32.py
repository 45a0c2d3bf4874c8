"""The 32-bit heap comparison (host_tools/benchmarks/heap32.py): the program both interpreters
run, its parsing, the import order, and the real 32-bit WASI build running it."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_tools.benchmarks import heap32

SMALL = '''
TABLE = {"a": 1, "b": 2}


class Thing:
    def __init__(self, n):
        self.n = n

    def twice(self):
        return self.n * 2


def make(n):
    return [Thing(i) for i in range(n)]
'''


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    """A directory laid out as the programs expect, holding one small module `small`, built
    both as a ROMFS image and as a .mpy file, and the stand-ins."""
    from host_tools.deploy import build_romfs
    from host_tools.mpy_build import compile_file

    src = tmp_path / "src" / "small.py"
    src.parent.mkdir()
    src.write_text(SMALL)
    compile_file(src, tmp_path / "mpy" / "small.mpy")
    (tmp_path / "app.romfs").write_bytes(build_romfs({"small.mpy": (tmp_path / "mpy" / "small.mpy")
                                                      .read_bytes()}))
    heap32.stand_ins(tmp_path)
    return tmp_path


def test_application_modules_come_after_the_application_modules_they_import() -> None:
    order = heap32.application_modules()
    assert "firmware.main" in order and "offline_cache.cache" in order and "crypto.ev2" in order
    assert len(order) == len(set(order))
    position = {name: i for i, name in enumerate(order)}
    late = []
    for name in order:
        source = heap32.REPO_ROOT / (name.replace(".", "/") + ".py")
        for dep in heap32._imports(source) & set(order):
            if position[dep] > position[name] and name not in heap32._imports(
                    heap32.REPO_ROOT / (dep.replace(".", "/") + ".py")):
                late.append((name, dep))
    assert late == []  # only a mutual import may put a dependency after its user


def test_parse_reads_figures_and_refuses_a_failed_import() -> None:
    assert heap32.parse("maxsize 2147483647\nlive 512\n", "x") == (32, 512)
    assert heap32.parse("maxsize 9223372036854775807\nlive 1024\n", "x") == (64, 1024)
    with pytest.raises(heap32.Heap32Error, match="error small"):
        heap32.parse("maxsize 1\nerror small ImportError('no module')\nlive 0\n", "x")
    with pytest.raises(heap32.Heap32Error, match="no figures"):
        heap32.parse("maxsize 2147483647\n", "x")


@pytest.mark.parametrize("from_rom", [True, False])
def test_both_interpreters_import_the_same_module_and_the_32_bit_one_needs_less(
        staged: Path, from_rom: bool) -> None:
    wasi = heap32.Wasi()
    got = {}
    for bits, runner, guest in ((64, heap32.run_unix, str(staged)),
                                (32, wasi.run, heap32.GUEST_DIR)):
        (staged / f"{heap32.PROGRAM}.py").write_text(heap32.program(guest, from_rom))
        got[bits] = heap32.shares(staged, runner, str(bits), bits, ["small"])
    assert got[64]["small"] > 0 and got[32]["small"] > 0
    assert got[64]["total"] == got[64]["small"]
    assert got[32]["total"] < got[64]["total"]  # the same objects, half-size pointers and blocks


def test_the_word_size_is_checked(staged: Path) -> None:
    (staged / f"{heap32.PROGRAM}.py").write_text(heap32.program(str(staged), True))
    with pytest.raises(heap32.Heap32Error, match="64-bit MicroPython, expected 32-bit"):
        heap32.live_after(staged, heap32.run_unix, "unix port", 32, [])


def test_a_program_that_fails_on_the_32_bit_build_is_reported(staged: Path) -> None:
    (staged / "bad.py").write_text("raise ValueError('on purpose')\n")
    with pytest.raises(heap32.Heap32Error, match="on purpose"):
        heap32.Wasi().run(staged, "bad")


def test_a_module_missing_on_the_32_bit_build_is_an_error_not_a_figure(staged: Path) -> None:
    (staged / f"{heap32.PROGRAM}.py").write_text(heap32.program(heap32.GUEST_DIR, True))
    with pytest.raises(heap32.Heap32Error, match="error nothere"):
        heap32.live_after(staged, heap32.Wasi().run, "wasi", 32, ["small", "nothere"])


def test_the_whole_measurement_covers_every_module_on_both_interpreters() -> None:
    got = heap32.measure()
    app = set(heap32.application_modules())
    for place in ("rom", "files"):
        for bits in (64, 32):
            assert set(got[f"{place}_{bits}"]) == app | {"total"}
        assert 0 < got[f"{place}_32"]["total"] < got[f"{place}_64"]["total"]
    assert got["rom_32"]["total"] < got["files_32"]["total"]  # bytecode out of the heap
    assert set(got["board_32"]) == set(heap32.ESP32_BOARD) | {"total"}
    assert 0 < got["board_32"]["total"] < got["board_64"]["total"]
