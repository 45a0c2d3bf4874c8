"""The named console calls (firmware/console.py, host_tools/console.py `call`) on a real
virtual device with the real mpremote: each call answers in one format, a wrong name is one
clear line, arguments are literals and never code, and no other host module reaches into
the firmware's internals through console strings."""

from __future__ import annotations

import ast
import time
from collections.abc import Iterator

import pytest

from host_tools import console
from host_tools.errors import UserError
from host_tools.paths import REPO_ROOT
from host_tools.vdev.device import VirtualDevice

# Host files whose strings may name firmware modules, and why.
ALLOWED = {
    "host_tools/console.py": "the console layer: its one program that runs a named call",
    "host_tools/door_stage.py": "the staging transaction: its program must also run on a door "
                                "whose firmware predates the console calls (`STAGING 0` there)",
    "host_tools/benchmarks/pn532.py": "a MicroPython script the bench runs in its own "
                                      "interpreter, not over a door's console",
}


@pytest.fixture(scope="module")
def vdev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualDevice]:
    with VirtualDevice(tmp_path_factory.mktemp("calls") / "dev") as d:
        yield d


def test_each_call_answers_in_one_format(vdev: VirtualDevice) -> None:
    status = console.call(vdev.pty, "status")
    assert status["ready"] is True and status["version"]
    now = time.time()
    assert console.call(vdev.pty, "set_time", now) == pytest.approx(now)
    report = console.call(vdev.pty, "self_report")
    assert report["firmware"] == status["version"] and report["ready"] is True
    assert report["clock"] == pytest.approx(now, abs=60)
    logged = console.call(vdev.pty, "log_lines")
    assert logged["now"] == pytest.approx(now, abs=60)
    assert logged["lines"] and all(isinstance(age, int) and text for age, _, text in logged["lines"])
    last = console.call(vdev.pty, "log_lines", 1)["lines"]
    assert len(last) == 1 and last[0][1:] == logged["lines"][-1][1:]
    assert console.call(vdev.pty, "relay_test", 20) == 20
    depth = console.call(vdev.pty, "self_report")["journal"][0]
    assert console.call(vdev.pty, "record_events", 3, 2, 1) == 3
    assert console.call(vdev.pty, "self_report")["journal"][0] == depth + 3
    # the module was imported for each call and dropped after it: the heap is as it was
    held = console.mpremote(vdev.pty, "exec", "import sys, firmware\nprint('HELD', 'firmware."
                            "console' in sys.modules or hasattr(firmware, 'console'))")
    assert "HELD False" in held


def test_a_wrong_name_is_one_clear_line(vdev: VirtualDevice) -> None:
    with pytest.raises(UserError) as e:
        console.call(vdev.pty, "no_such_call")
    assert "no console call 'no_such_call'" in str(e.value) and "\n" not in str(e.value)
    assert console.call(vdev.pty, "status")["ready"] is True  # the door is none the worse


@pytest.mark.parametrize("name, args", [("status()\nimport os", ()), ("_answer", ()),
                                        ("relay_test", (object(),)), ("set_time", (float("nan"),))])
def test_names_and_arguments_are_never_code(name: str, args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        console.call("/dev/not-used", name, *args)  # type: ignore[arg-type]


def test_string_arguments_stay_literals() -> None:
    sneaky = "x')\nimport os\nos.remove('keys.json')\nprint('"
    program = console._call_program("status", (sneaky, 1, None, True, 2.5))
    calls = [n for n in ast.walk(ast.parse(program)) if isinstance(n, ast.Call)]
    assert sorted(ast.unparse(c.func) for c in calls) == ["f", "print", "sys.modules.pop"]
    call = next(c for c in calls if isinstance(c.func, ast.Name) and c.func.id == "f")
    assert [ast.literal_eval(a) for a in call.args] == [sneaky, 1, None, True, 2.5]


def test_wipe_journal_holds_the_door_until_its_power_goes(vdev: VirtualDevice) -> None:
    console.call(vdev.pty, "record_events", 5, 2, 1)
    before = console.call(vdev.pty, "self_report")["journal"][0]
    proc = console.open_call(vdev.pty, "wipe_journal")
    try:
        assert proc.stdout is not None
        answered = next(line for line in proc.stdout if line.startswith("CALL "))
        assert console.answer(vdev.pty, "wipe_journal", answered) == "wiped"
    finally:
        proc.kill()
        proc.wait()
    vdev.restart()
    assert console.call(vdev.pty, "self_report")["journal"][0] < before


def _firmware_imports_in_strings(source: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if "from firmware" in text and " import " in text or "import firmware." in text:
                found.append(f"{name}:{node.lineno}")
    return found


def test_no_host_module_reaches_into_the_firmware_through_console_strings() -> None:
    found = []
    for top in ("host_tools", "hil"):
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            rel = path.relative_to(REPO_ROOT).as_posix()
            # benchmarks/device/: bench programs run by MicroPython itself, not over a console
            if rel not in ALLOWED and "/benchmarks/device/" not in rel:
                found += _firmware_imports_in_strings(path.read_text(), rel)
    assert found == []


def test_the_check_finds_a_firmware_import_string() -> None:
    sample = 'from firmware import VERSION\nP = "from firmware.main import running\\nprint(1)"\n'
    assert _firmware_imports_in_strings(sample, "x.py") == ["x.py:2"]
    assert _firmware_imports_in_strings('Q = "import firmware.log as l"\n', "y.py") == ["y.py:1"]


class _Sneaky(str):
    def __repr__(self) -> str:
        return "__import__('os').remove('keys.json')"


class _SneakyInt(int):
    def __repr__(self) -> str:
        return "__import__('os').remove('keys.json')"


@pytest.mark.parametrize("arg", [_Sneaky("x"), _SneakyInt(5)])
def test_a_subclass_with_its_own_repr_is_refused_not_pasted_as_code(arg: object) -> None:
    with pytest.raises(ValueError):
        console._call_program("relay_test", (arg,))  # type: ignore[arg-type]
