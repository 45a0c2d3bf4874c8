"""A PostgreSQL server from Debian's packages in a temporary directory: its own cluster
(initdb), port and socket directory, run as the `postgres` user when started as root.

    with PostgreSQL() as pg:
        url = pg.create_database("platform")   # postgresql://postgres@127.0.0.1:PORT/platform
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from host_tools.services._proc import ServiceError, as_user, free_port, give_to, tail, wait_listening

START_TIMEOUT_S = 60.0


def _bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])  # the newest major version installed
    on_path = shutil.which(name)
    if on_path is None:
        raise ServiceError(f"{name} not found: install Debian's postgresql (./dev setup does)")
    return on_path


class PostgreSQL:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="postgres-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.host = "127.0.0.1"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def start(self) -> PostgreSQL:
        give_to("postgres", self.dir)
        log = self.dir / "initdb.log"
        r = subprocess.run([*as_user("postgres"), _bin("initdb"), "-D", str(self.data), "-U", "postgres",
                            "--auth=trust", "--encoding=UTF8", "--no-instructions"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            log.write_text(r.stdout + r.stderr)
            raise ServiceError(f"initdb failed: {tail(log)}")
        server_log = self.dir / "server.log"
        give_to("postgres", self.dir)
        with open(server_log, "wb") as out:
            self._proc = subprocess.Popen(
                [*as_user("postgres"), _bin("postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.dir}",
                 "-c", "fsync=on", "-c", "max_connections=200"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_listening(self.port, self._proc, START_TIMEOUT_S, "PostgreSQL", server_log)
        self._wait_accepting(server_log)
        return self

    def _wait_accepting(self, server_log: Path) -> None:
        """PostgreSQL listens before it takes connections ("the database system is starting
        up", for a while on a busy machine): wait until a connection is accepted."""
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=5):
                    return
            except psycopg.OperationalError as e:
                if self._proc is None or self._proc.poll() is not None or time.monotonic() > deadline:
                    raise ServiceError(f"PostgreSQL does not take connections ({e}): "
                                       f"{tail(server_log)}") from None
                time.sleep(0.2)

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@{self.host}:{self.port}/{name}"

    @property
    def pid(self) -> int | None:
        """The server's process id (its backends are its descendants)."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()  # SIGTERM: PostgreSQL's "smart" shutdown
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> PostgreSQL:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
