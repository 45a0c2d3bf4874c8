"""The HIL suite's pytest plugin: `pytest hil/ [--rig rig.toml] [--broker B] [--hil-report FILE]`.

Without --rig the virtual rig runs (nothing to plug in). `--broker` picks the broker the rig
starts for each door (host_tools/services/brokers.py): mosquitto, or RabbitMQ's MQTT plugin, a
strict MQTT 3.1.1 broker (a bench whose rig file names a `[broker]` uses that one). Each test
gets a freshly commissioned door (`door` fixture); timings the tests record go into the report's
timing table, written at the end of the session (Markdown) beside pytest's own `--junitxml`
report.
"""

from __future__ import annotations

import gc
import subprocess
from collections.abc import Iterator
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest

from hil.rig import Door, RigConfig, RigError, Timings
from host_tools.services.brokers import BROKERS

TIMINGS = Timings()
PCSC_DIR = pytest.StashKey[TemporaryDirectory[str] | None]()


def pytest_configure(config: pytest.Config) -> None:
    """The run's own pcscd and vpcd ports (host_tools/cards/pcsc_private.py), set before any
    PC/SC call: two suites on one machine no longer reset each other's cards."""
    from host_tools.cards import pcsc_private

    worker = getattr(config, "workerinput", {}).get("workerid", "")  # under pytest-xdist
    config.stash[PCSC_DIR] = pcsc_private.isolate_in_temp(worker)


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(PCSC_DIR, None)
    if folder is not None:
        folder.cleanup()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop rig")
    group.addoption("--rig", default=None, help="rig file (TOML, docs/hil.md); default: the virtual rig")
    group.addoption("--broker", choices=BROKERS, default="mosquitto",
                    help="the broker the rig starts for each door (default: mosquitto)")
    group.addoption("--hil-report", default="build/hil-report.md",
                    help="where to write the run's summary with the timing table")


@pytest.fixture(scope="session")
def rig_config(request: pytest.FixtureRequest) -> RigConfig:
    try:
        return RigConfig.load(request.config.getoption("--rig"))
    except RigError as e:
        raise pytest.UsageError(str(e)) from None


@pytest.fixture(scope="session")
def pcscd(request: pytest.FixtureRequest) -> Iterator[None]:
    """pcscd (started here when none is running) showing vsmartcard's vpcd reader, or on a
    bench rig the card readers its rig file names."""
    from host_tools.cards import pcsc

    try:
        rig = RigConfig.load(request.config.getoption("--rig"))
    except RigError:
        rig = RigConfig()
    wanted = sorted(set(rig.cards.values())) if rig.kind == "bench" else ["Virtual PCD 00 00"]
    proc: subprocess.Popen[bytes] | None = pcsc.start_pcscd()
    try:  # stopped however the run ends, a reader that never showed included
        for name in wanted:
            if not pcsc.wait_for_reader(name):
                pytest.fail(f"pcscd does not show the card reader {name!r} "
                            f"(readers: {', '.join(pcsc.reader_names()) or 'none'})")
        yield
    finally:
        gc.collect()
        if proc is not None:
            proc.terminate()
            proc.wait(10)


@pytest.fixture(scope="session")
def broker_name(request: pytest.FixtureRequest) -> str:
    """The broker the rig starts (`--broker`)."""
    return str(request.config.getoption("--broker"))


@pytest.fixture()
def door(rig_config: RigConfig, pcscd: None, broker_name: str, tmp_path: Path) -> Iterator[Door]:
    """A freshly commissioned door: the virtual device, or the bench's board (`kind`), with a
    broker of its own (`--broker`) unless the rig file names one."""
    d: Door
    if rig_config.kind == "bench":
        from hil.bench_door import BenchDoor

        try:
            d = BenchDoor(rig_config, tmp_path, TIMINGS, broker_name)
        except RigError as e:
            pytest.fail(f"bench rig: {e}", pytrace=False)
    else:
        from hil.virtual import VirtualDoor

        d = VirtualDoor(tmp_path, TIMINGS, broker_name)
    yield d
    d.close()


@pytest.fixture()
def timings() -> Timings:
    return TIMINGS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In a pytest-xdist worker, a test's timings travel to the controller with its teardown
    report (the controller writes the report; a worker's own TIMINGS would be lost)."""
    outcome = yield
    if call.when == "teardown" and hasattr(item.config, "workerinput"):
        outcome.get_result().user_properties.append(("hil_timings", TIMINGS.take()))  # type: ignore[attr-defined]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if getattr(report, "node", None) is None:
        return  # not a worker's report: the samples are in TIMINGS already
    for key, samples in report.user_properties:
        if key == "hil_timings" and isinstance(samples, dict):
            TIMINGS.merge(samples)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = TIMINGS.table()
    if not rows:
        return
    stats = terminalreporter.stats
    passed, failed = len(stats.get("passed", [])), len(stats.get("failed", []))
    lines = ["# HIL run", "", f"{passed} passed, {failed} failed.", "",
             "| timing | n | median ms | p95 ms | max ms |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {n} | {k} | {m:.1f} | {p:.1f} | {x:.1f} |" for n, k, m, p, x in rows]
    text = "\n".join(lines) + "\n"
    path = Path(terminalreporter.config.getoption("--hil-report"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    terminalreporter.write_line("")
    for line in lines[4:]:
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"HIL report: {path}")
