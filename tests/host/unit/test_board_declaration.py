"""Board declarations (host_tools/boards.py): every board of the tree declares itself, a
broken declaration is one clear error, and two boards on one platform must be chosen by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_tools.boards import BoardError, board_for_platform, board_named, boards, read_board

TINY = '''"""The smallest board: the board interface and nothing fitted, running the crypto package."""

from board import interface

PLATFORM = "linux"
PACKAGES = ("crypto",)
DEVICE_FILES = ()
ENTRY = None


class TinyBoard(interface.Board):
    name = "tiny"
    fs_root = "/flash"
'''


def _board(root: Path, name: str, text: str) -> None:
    (root / "board").mkdir(parents=True, exist_ok=True)
    (root / "board" / "__init__.py").touch()
    (root / "board" / f"{name}.py").write_text(text)


def test_every_board_of_the_tree_declares_itself() -> None:
    found = {b.module: b for b in boards()}
    assert set(found) == {"esp32_ref", "virtual", "mcu_qemu"}
    assert {b.platform for b in found.values()} == {"esp32", "linux", "qemu"}
    assert found["esp32_ref"].entry == "board/esp32_main.py"
    # Support modules are not boards.
    assert read_board("romfs") is None and read_board("interface") is None


def test_a_broken_declaration_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "crypto").mkdir()
    (tmp_path / "crypto" / "__init__.py").touch()
    good = TINY
    cases = {
        "half": (good.replace('ENTRY = None\n', ''), "declares no ENTRY"),
        "computed": (good.replace('PACKAGES = ("crypto",)', 'PACKAGES = tuple(["crypto"])'),
                     "PACKAGES must be a plain literal"),
        "missing": (good.replace('DEVICE_FILES = ()', 'DEVICE_FILES = ("board/gone.py",)'),
                    "declares board/gone.py, which is not a source file"),
        "nopkg": (good.replace('("crypto",)', '("nowhere",)'), "package nowhere, which does not"),
        "list": (good.replace('("crypto",)', '"crypto"'), "PACKAGES must be a tuple of strings"),
        "noname": (good.replace('    name = "tiny"\n', ''), "no Board subclass with a `name`"),
    }
    for module, (text, why) in cases.items():
        _board(tmp_path, module, text)
        with pytest.raises(BoardError) as e:
            read_board(module, tmp_path)
        assert why in str(e.value), module
        (tmp_path / "board" / f"{module}.py").unlink()


def test_two_boards_on_one_platform_must_be_chosen_by_name(tmp_path: Path) -> None:
    (tmp_path / "crypto").mkdir()
    (tmp_path / "crypto" / "__init__.py").touch()
    _board(tmp_path, "tiny", TINY)
    assert board_for_platform("linux", tmp_path) == board_named("tiny", tmp_path)
    assert board_for_platform("esp32", tmp_path) is None
    _board(tmp_path, "tiny2", TINY.replace('"tiny"', '"tiny-two"'))
    with pytest.raises(BoardError) as e:
        board_for_platform("linux", tmp_path)
    assert "boards tiny and tiny-two both run on linux" in str(e.value)
    assert board_named("tiny-two", tmp_path).module == "tiny2"
    spec = board_named("tiny2", tmp_path)
    assert spec.files(tmp_path) == ["board/__init__.py", "board/interface.py", "board/tiny2.py",
                                    "crypto/__init__.py"]


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_board_name_is_refused_not_taken_as_the_default(name: str) -> None:
    from host_tools.deploy import board_for
    from host_tools.errors import UserError

    with pytest.raises(UserError, match="no board"):
        board_for("linux", name)
    assert board_for("linux").name == board_for("linux", "virtual").name  # the default stays
