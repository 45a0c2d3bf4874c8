"""Test-suite wiring: device tests under MicroPython, fixtures shared by host tests."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.mpy_plugin"]


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
