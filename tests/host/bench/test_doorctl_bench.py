"""`doorctl bench`: discovery, selection, JSON and Markdown output, errors.

Most tests run the real CLI in-process against tiny benchmark modules written into a
temporary package path, so they measure nothing slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

import host_tools.benchmarks as benchmarks_pkg
from host_tools.benchmarks import Benchmark, BenchmarkError, discover, drift, select
from host_tools.cli import app
from host_tools.commands.bench import BEGIN, END, Row, existing_rows, measured_at

DOORCTL = str(Path(sys.executable).with_name("doorctl"))

TINY = '''
FIGURES = {
    "cache.lookup_us": "whitelist lookup, us",
    "cache.load_ms": "cache image load, ms",
    "tiny.count": "a count",
}
CALLS = []

def run(names):
    CALLS.append(sorted(names))
    out = {"cache.lookup_us": 12.5, "cache.load_ms": 3.0, "tiny.count": 7}
    return {k: out[k] for k in names}
'''

OTHER = '''
FIGURES = {"other.ratio": "a ratio"}

def run(names):
    return {"other.ratio": 0.25}
'''


def _write(folder: Path, name: str, text: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(text))


@pytest.fixture
def bench_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The benchmark package's path pointed at an empty folder; modules written there are
    what `doorctl bench` discovers."""
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    monkeypatch.setattr(benchmarks_pkg, "__path__", [str(folder)])
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith("host_tools.benchmarks."):
            del sys.modules[name]


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["bench", *args])
    return result.exit_code, result.stdout, result.stderr


def test_discovery_of_modules_in_the_package(bench_dir: Path) -> None:
    _write(bench_dir, "tiny", TINY)
    _write(bench_dir, "other", OTHER)
    _write(bench_dir, "helpers", "X = 1\n")  # no FIGURES/run: not a benchmark
    found = discover()
    assert [b.name for b in found] == ["other", "tiny"]
    assert set(found[1].figures) == {"cache.lookup_us", "cache.load_ms", "tiny.count"}


def test_json_is_exactly_one_object_of_the_selected_figures(bench_dir: Path) -> None:
    _write(bench_dir, "tiny", TINY)
    _write(bench_dir, "other", OTHER)
    code, out, _ = run_cli("cache.", "other.ratio", "--json")
    assert code == 0
    assert json.loads(out) == {"cache.lookup_us": 12.5, "cache.load_ms": 3.0, "other.ratio": 0.25}
    assert out.count("\n") == 1
    tiny = sys.modules["host_tools.benchmarks.tiny"]
    assert tiny.CALLS == [["cache.load_ms", "cache.lookup_us"]]  # only what was asked for


def test_a_prefix_without_the_dot_and_no_names_at_all(bench_dir: Path) -> None:
    _write(bench_dir, "tiny", TINY)
    _write(bench_dir, "other", OTHER)
    code, out, _ = run_cli("cache", "--json")
    assert code == 0 and set(json.loads(out)) == {"cache.lookup_us", "cache.load_ms"}
    code, out, _ = run_cli("--json")
    assert code == 0
    assert set(json.loads(out)) == {"cache.lookup_us", "cache.load_ms", "tiny.count",
                                    "other.ratio"}


def test_unknown_name_is_a_usage_error(bench_dir: Path) -> None:
    _write(bench_dir, "tiny", TINY)
    code, out, err = run_cli("cache.look", "--json")  # not a figure, prefix or family
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "error: unknown figure cache.look: `doorctl bench --list` shows them"]


def test_table_and_list(bench_dir: Path) -> None:
    _write(bench_dir, "tiny", TINY)
    code, out, _ = run_cli()
    assert code == 0
    assert "cache.lookup_us" in out and "12.5" in out and "whitelist lookup, us" in out
    code, out, _ = run_cli("--list")
    assert code == 0 and out.splitlines()[0].split()[0] == "cache.load_ms"
    assert len(out.splitlines()) == 3


def test_markdown_has_the_machine_and_a_row_per_figure(bench_dir: Path) -> None:
    _write(bench_dir, "tiny", TINY)
    code, out, _ = run_cli("--markdown")
    assert code == 0
    for label in ("| CPU |", "| cores |", "| Python |", "| MicroPython |", "| date |"):
        assert label in out, label
    here = f"`{measured_at()}`"
    assert f"at commit {here} on this machine" in out
    assert f"| `cache.lookup_us` | 12.5 | {here} | whitelist lookup, us |" in out
    assert f"| `tiny.count` | 7 | {here} | a count |" in out
    assert "not installed" not in out and "unknown" not in out


def test_markdown_update_keeps_the_text_around_the_table(bench_dir: Path, tmp_path: Path) -> None:
    _write(bench_dir, "tiny", TINY)
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nWhy these figures matter.\n")
    assert run_cli("--markdown", "--update", str(doc))[0] == 0
    assert run_cli("--markdown", "--update", str(doc))[0] == 0  # replaced, not appended
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nWhy these figures matter.\n")
    assert text.count("`cache.lookup_us`") == 1
    code, _, err = run_cli("--update", str(doc))
    assert code == 2 and "add --markdown" in err


def test_markdown_update_of_some_figures_keeps_the_others(bench_dir: Path, tmp_path: Path) -> None:
    _write(bench_dir, "tiny", TINY)
    _write(bench_dir, "other", OTHER)
    doc = tmp_path / "BENCHMARKS.md"
    assert run_cli("--markdown", "--update", str(doc))[0] == 0
    before = doc.read_text()
    here = f"`{measured_at()}`"
    assert f"| `other.ratio` | 0.25 | {here} | a ratio |" in before and "kept" not in before
    # the table as an earlier run measured it, at another commit
    doc.write_text(before.replace(here, "`0123456789ab`"))
    _write(bench_dir, "other", OTHER.replace("0.25", "0.5"))
    for name in [n for n in sys.modules if n.startswith("host_tools.benchmarks.")]:
        del sys.modules[name]
    assert run_cli("other", "--markdown", "--update", str(doc))[0] == 0
    text = doc.read_text()
    assert f"| `other.ratio` | 0.5 | {here} | a ratio |" in text  # measured again
    # kept, never silently: marked, with the commit it was measured at
    assert "| `cache.lookup_us` | 12.5 | `0123456789ab` (kept) | whitelist lookup, us |" in text
    assert f"**3 of 4 figures were not measured at {here}**" in text
    assert text.count("`tiny.count`") == 1


def test_rows_of_an_earlier_run_at_the_same_clean_commit_are_not_kept() -> None:
    from host_tools.commands.bench import Row, markdown

    desc = {"a.x": "x", "t.cuts": "cuts", "t.lost": "lost", "old.y": "y"}
    earlier = {"t.cuts": Row("1,000", "cuts", "6c0144ccb3a0"), "t.lost": Row("0", "lost", "6c0144ccb3a0"),
               "old.y": Row("2", "y", "0123456789ab")}
    text = markdown({"a.x": 1.0}, desc, {}, "6c0144ccb3a0", earlier)
    assert "| `t.cuts` | 1,000 | `6c0144ccb3a0` | cuts |" in text  # of this commit, not kept
    assert "2 of 4 figures come from an earlier run at this same commit (`6c0144ccb3a0`): t.*." in text
    assert "| `old.y` | 2 | `0123456789ab` (kept) | y |" in text
    assert "**1 of 4 figures were not measured at `6c0144ccb3a0`**" in text
    # from a dirty tree nothing is the same commit: the earlier rows stay kept
    dirty = markdown({"a.x": 1.0}, desc, {}, "6c0144ccb3a0+dirty", earlier)
    assert "| `t.cuts` | 1,000 | `6c0144ccb3a0` (kept) | cuts |" in dirty
    assert "earlier run at this same commit" not in dirty


def test_a_broken_module_does_not_stop_the_others(bench_dir: Path) -> None:
    _write(bench_dir, "tiny", TINY)
    _write(bench_dir, "broken", "import no_such_module_here\nFIGURES = {}\n")
    code, out, err = run_cli("tiny", "--json")
    assert code == 0 and "tiny.count" in json.loads(out)
    assert "benchmark broken cannot be loaded" in err
    code, out, err = run_cli("--json")  # the full run has lost the module's figures: it failed
    assert code == 1
    got = json.loads(out)
    assert "tiny.count" in got
    assert "cannot be loaded: ModuleNotFoundError" in got["errors"]["broken"]


def test_a_failing_or_lying_benchmark_is_an_error(bench_dir: Path) -> None:
    _write(bench_dir, "tiny", TINY)
    _write(bench_dir, "nan", 'FIGURES = {"nan.x": "x"}\ndef run(names):\n'
                             '    return {"nan.x": float("nan")}\n')
    _write(bench_dir, "boom", 'FIGURES = {"boom.x": "x"}\ndef run(names):\n'
                              '    raise RuntimeError("no broker")\n')
    code, out, err = run_cli("--json")
    assert code == 1
    got = json.loads(out)
    assert set(got) == {"cache.lookup_us", "cache.load_ms", "tiny.count", "errors"}
    assert got["errors"] == {"boom.x": "RuntimeError: no broker", "nan.x": "nan is not a number"}
    assert "error: boom.x failed: RuntimeError: no broker" in err
    assert "error: 2 of 5 figures failed" in err
    code, out, err = run_cli()  # the table shows the failed figures with their reason
    assert code == 1
    row = next(line for line in out.splitlines() if "boom.x" in line)
    assert "failed" in row and "RuntimeError: no broker" in row


SECTIONS = '''
from host_tools.benchmarks import failing

FIGURES = {"two.a": "a", "two.b": "b", "two.c": "c", "two.d": "d"}

def run(names):
    out = {}
    with failing(out, "two.a", "two.b"):
        out["two.a"] = 1.0
        raise OSError("the I/O channel closed")
    with failing(out, "two.c"):
        out["two.c"] = 3.0
    return out  # two.d forgotten
'''


def test_one_failing_section_fails_only_its_own_figures(bench_dir: Path) -> None:
    _write(bench_dir, "two", SECTIONS)
    code, out, _ = run_cli("--json")
    assert code == 1
    assert json.loads(out) == {
        "two.a": 1.0, "two.c": 3.0,
        "errors": {"two.b": "OSError: the I/O channel closed",
                   "two.d": "benchmark two did not measure it"}}


def test_a_device_that_dies_in_a_heap_search_does_not_fit(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """The device starts, then dies (MemoryError on the device): the I/O channel closes
    under the status request. That is the answer "does not fit", not the end of the run."""
    from host_tools.benchmarks import vdev
    from host_tools.vdev.io_client import IOChannelError

    stopped = []

    class Dies:
        def __init__(self, state: Path, heap: str) -> None:
            self.io_addr = ("127.0.0.1", 1)

        def start(self) -> None:
            pass

        def stop(self) -> None:
            stopped.append(True)

    class ClosedChannel:
        def __init__(self, addr: object) -> None:
            raise IOChannelError("the I/O channel closed")

    monkeypatch.setattr(vdev, "VirtualDevice", Dies)
    monkeypatch.setattr(vdev, "VirtualIO", ClosedChannel)
    monkeypatch.setattr(vdev, "STAY_UP_S", 0)
    assert vdev._boots(tmp_path, 64) is False
    assert stopped == [True]
    with pytest.raises(RuntimeError, match="boots in no heap"):
        vdev._min_heap_kib()


def test_a_figure_defined_twice_is_reported(bench_dir: Path) -> None:
    _write(bench_dir, "tiny", TINY)
    _write(bench_dir, "twin", 'FIGURES = {"tiny.count": "again"}\ndef run(names):\n'
                              '    return {}\n')
    with pytest.raises(BenchmarkError, match="tiny.count is defined by both tiny and twin"):
        discover()


def _bench(name: str, figures: dict[str, str]) -> Benchmark:
    mod = ModuleType(f"host_tools.benchmarks.{name}")
    mod.FIGURES = figures  # type: ignore[attr-defined]
    mod.run = lambda names: {n: 1.0 for n in names}  # type: ignore[attr-defined]
    return Benchmark(mod)


def test_an_empty_name_is_a_usage_error_not_every_figure(bench_dir: Path) -> None:
    """`doorctl bench "$FIGURE"` with the variable unset named no figure: it ran them all
    (the full run takes more than ten minutes)."""
    _write(bench_dir, "tiny", TINY)
    _write(bench_dir, "other", OTHER)
    for names in ([""], ["cache", ""], [" "]):
        code, out, err = run_cli(*names, "--json")
        assert code == 2 and out == "", names
        assert len(err.strip().splitlines()) == 1 and "unknown figure" in err, err


def test_selection_by_name_and_prefix() -> None:
    a = _bench("a", {"cache.x": "", "cache.y": ""})
    b = _bench("b", {"vdev.boot_s": "", "vdev.heap": ""})
    assert select([a, b], ["cache."]) == {a: {"cache.x", "cache.y"}}
    assert select([a, b], ["vdev"]) == {b: {"vdev.boot_s", "vdev.heap"}}
    assert select([a, b], ["vdev.boot_s", "cache.y"]) == {a: {"cache.y"}, b: {"vdev.boot_s"}}
    assert set(select([a, b], [])) == {a, b}
    with pytest.raises(KeyError):
        select([a, b], ["cach"])


def test_selection_of_a_family_of_figures_named_alike() -> None:
    c = _bench("c", {"image.soak_decisions": "", "image.soak_cuts": "", "image.heap_min_kib": "",
                     "image.soakage": ""})
    assert select([c], ["image.soak"]) == {c: {"image.soak_decisions", "image.soak_cuts"}}
    with pytest.raises(KeyError):
        select([c], ["image.soa"])
    with pytest.raises(KeyError):
        select([c], ["image_"])  # a family is named below a prefix, not instead of one


def test_the_repo_benchmarks_load_and_the_installed_command_answers() -> None:
    figures = {f for b in discover() for f in b.figures}
    assert {"vdev.boot_s", "vdev.heap_peak_kib", "deploy.first_s", "deploy.again_s"} <= figures
    proc = subprocess.run([DOORCTL, "bench", "no.such.figure"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown figure no.such.figure: `doorctl bench --list` shows them"]


def test_a_table_from_before_the_commit_column_is_kept_as_unknown(bench_dir: Path,
                                                                  tmp_path: Path) -> None:
    _write(bench_dir, "tiny", TINY)
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"{BEGIN}\n\n| figure | value | what |\n|---|---:|---|\n"
                   "| `cache.load_ms` | 4 | old |\n| `gone.figure` | 1 | no longer defined |\n"
                   f"\n{END}\n")
    assert existing_rows(doc)["cache.load_ms"] == Row("4", "old", "")
    assert run_cli("cache.lookup_us", "--markdown", "--update", str(doc))[0] == 0
    text = doc.read_text()
    assert "| `cache.load_ms` | 4 | unknown (kept) | old |" in text
    assert "gone.figure" not in text  # a figure no benchmark defines any more is dropped
    assert existing_rows(doc)["cache.load_ms"].commit == ""


QUICK = '''
FIGURES = {"q.fast_ms": "fast", "q.flash_bytes": "flash bytes", "q.slow_s": "slow"}
QUICK_FIGURES = ["q.fast_ms", "q.flash_bytes"]
QUICK = {"SAMPLES": 3}
SAMPLES = 100
CALLS = []

def run(names):
    CALLS.append((sorted(names), SAMPLES))
    return {"q.fast_ms": 2.0 + SAMPLES / 1000, "q.flash_bytes": 10.0, "q.slow_s": 9.0}
'''


def _table(path: Path, rows: dict[str, str]) -> None:
    lines = [BEGIN, "", "| figure | value | commit | what |", "|---|---:|---|---|"]
    lines += [f"| `{k}` | {v} | `0123456789ab` | x |" for k, v in rows.items()]
    path.write_text("\n".join([*lines, "", END, ""]))


def test_quick_runs_the_quick_figures_with_their_settings(bench_dir: Path) -> None:
    _write(bench_dir, "q", QUICK)
    code, out, _ = run_cli("--quick", "--json")
    assert code == 0 and json.loads(out) == {"q.fast_ms": 2.003, "q.flash_bytes": 10.0}
    q = sys.modules["host_tools.benchmarks.q"]
    assert q.CALLS == [(["q.fast_ms", "q.flash_bytes"], 3)] and q.SAMPLES == 100  # restored
    assert run_cli("q.slow_s", "--quick")[0] == 2  # not a quick figure
    assert run_cli("--quick", "--markdown", "--update", "x.md")[0] == 2


def test_compare_reports_a_figure_beyond_its_noise_band(bench_dir: Path, tmp_path: Path) -> None:
    _write(bench_dir, "q", QUICK)
    doc = tmp_path / "BENCHMARKS.md"
    _table(doc, {"q.fast_ms": "2.5", "q.flash_bytes": "7"})  # timing within x1.5; a count is not
    code, out, _ = run_cli("--quick", "--compare", str(doc))
    assert code == 0  # a report: drift alone does not fail the run
    lines = out.splitlines()
    assert any(line.startswith("ok     q.fast_ms: 2.003 now, 2.5 in the table (at 0123456789ab)")
               for line in lines)
    assert any(line.startswith("MOVED  q.flash_bytes: 10 now, 7 in the table") for line in lines)
    assert lines[-1] == ("compared with " + str(doc) + ": 2 figures, 1 moved beyond their noise "
                         "band: q.flash_bytes")
    code, _, err = run_cli("--quick", "--compare", str(doc), "--fail-on-drift")
    assert code == 1 and "1 figures moved beyond their noise band: q.flash_bytes" in err
    code, out, err = run_cli("--quick", "--compare", str(doc), "--json")  # JSON alone on stdout
    assert code == 0 and set(json.loads(out)) == {"q.fast_ms", "q.flash_bytes"} and "MOVED" in err
    code, _, err = run_cli("--quick", "--compare", str(tmp_path / "none.md"))
    assert code == 2 and "holds no benchmark table" in err


def test_noise_bands() -> None:
    assert drift.band("cache.lookup_100k_ms") == drift.TIMING
    assert drift.band("card.decision_p95_ms") == drift.TAIL
    assert drift.band("journal.flash_bytes_per_event") == drift.EXACT
    assert drift.band("card.aes_blocks_per_session") == drift.EXACT
    assert drift.band("uplink.drain_events_per_s") == drift.TIMING
    assert drift.band("card.step_ms", {"card.step_ms": (2.0, 5.0)}) == (2.0, 5.0)
    step = drift.Drift("card.step_ms", 1.0, 3.0, (2.0, 5.0))
    assert not step.moved  # 1 -> 3 ms of a millisecond clock is within its slack
    assert drift.Drift("card.step_ms", 1.0, 267.0, (2.0, 5.0)).moved  # the Nagle regression
    assert drift.Drift("x.count", 0.0, 0.0, drift.EXACT).moved is False
    assert drift.Drift("x.count", 0.0, 1.0, drift.EXACT).moved


def test_every_quick_figure_and_noise_band_names_a_figure_of_its_module() -> None:
    quick = [f for b in discover() for f in b.quick_figures]
    assert "card.decision_ms" in quick and "card.step_ms" in quick
