"""Test-suite wiring: device tests under MicroPython, fixtures shared by host tests."""

from __future__ import annotations

from pathlib import Path
from tempfile import TemporaryDirectory

import pytest

pytest_plugins = ["tests.mpy_plugin"]
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


@pytest.fixture(scope="session")
def unix32_binary() -> Path:
    """The 32-bit unix image (doorctl build unix32), built once and cached in build/."""
    from host_tools.image.steps import Steps
    from host_tools.image.unix32 import build_unix32

    return build_unix32(Steps(quiet=True)).binary


@pytest.fixture(scope="session")
def postgres_server():  # type: ignore[no-untyped-def]
    """One PostgreSQL server for the run (Debian's package, in a temporary directory)."""
    from host_tools.services.postgres import PostgreSQL

    with PostgreSQL() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty platform database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "p.db")
    import uuid

    return str(request.getfixturevalue("postgres_server").create_database(f"t{uuid.uuid4().hex[:12]}"))


@pytest.fixture(autouse=True)
def _shared_scratch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPython half of a shared test gets a scratch folder of its own (MPY_TEST_TMP, as the
    MicroPython runner gives each test), not /tmp itself: tests/scratch.py's fixed names there
    were overwritten by any other run of the same test on the machine."""
    if request.node.path.parent.name == "shared":  # tests/shared
        monkeypatch.setenv("MPY_TEST_TMP", str(request.getfixturevalue("tmp_path")))
