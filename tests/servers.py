"""Real PostgreSQL and Redis servers for the tests (Debian's packages), on 127.0.0.1.

`.ci/run` starts one of each and exports their URLs (SWITCHYARD_TEST_POSTGRES_URL,
SWITCHYARD_TEST_REDIS_URL); without them, the session fixtures start their own. A test that
stops a server (PostgreSQL down for 10 s, Redis unreachable) starts a private one with
`PostgresServer.start(dir)` / `RedisServer.start(dir)`, never touching the shared ones.

Neither server is ever skipped in CI: when a binary is missing there, the fixture fails.
Elsewhere (a laptop without them) the tests that need them skip, saying what to install.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _pg_bin(name: str) -> str | None:
    for d in PG_BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def _missing(what: str, package: str) -> None:
    message = f"{what} is not installed (apt-get install {package}); .ci/run installs it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _pg_user() -> str | None:
    """PostgreSQL refuses to run as root: run its programs as the `postgres` user then
    (as the process itself, so that signals reach the server, not a wrapper)."""
    return "postgres" if os.geteuid() == 0 else None


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster in `directory`, trust auth on 127.0.0.1:`port`."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls, directory: Path | None = None, port: int | None = None) -> PostgresServer:
        """Create and start a cluster. `directory` default: a new one under the system's
        temporary directory (pytest's are private to root, which the `postgres` user that
        the server runs as cannot enter); `remove()` deletes it."""
        initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
        if initdb is None or postgres is None:
            _missing("PostgreSQL", "postgresql")
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="switchyard-pg-"))
        server = cls(directory, port or free_port())
        data = directory / "pgdata"
        directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        if not data.exists():
            subprocess.run(
                [
                    str(initdb),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
                check=True,
                capture_output=True,
                user=_pg_user(),
                group=_pg_user(),
            )
        server.resume()
        return server

    def resume(self) -> None:
        """Start (again) on the same port and data."""
        postgres = _pg_bin("postgres")
        assert postgres is not None
        self.process = subprocess.Popen(
            [
                postgres,
                "-D",
                str(self.directory / "pgdata"),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.directory}",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.directory / "postgres.log", "ab"),  # noqa: SIM115
            user=_pg_user(),
            group=_pg_user(),
        )
        _wait_port(self.port)
        # Accepting TCP is not accepting queries: wait for the end of recovery.
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): connections are cut, as when a database goes away."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def remove(self) -> None:
        """Stop, and delete the cluster's directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class RedisServer:
    """A private redis-server on 127.0.0.1:`port`, no persistence."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, directory: Path, port: int | None = None) -> RedisServer:
        if shutil.which("redis-server") is None:
            _missing("redis-server", "redis-server")
        server = cls(directory, port or free_port())
        directory.mkdir(parents=True, exist_ok=True)
        server.resume()
        return server

    def resume(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def fresh_database(server_url: str) -> str:
    """A new empty database on the server at `server_url`; its URL."""
    import psycopg

    name = "sy_test_" + secrets.token_hex(6)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


def redis_flush(url: str) -> None:
    """Empty the Redis database at `url` (FLUSHDB over a plain socket: no client library)."""
    host_port, _, db = url.removeprefix("redis://").partition("/")
    host, _, port = host_port.rpartition(":")
    with socket.create_connection((host, int(port)), 5) as s:
        s.sendall(f"*2\r\n$6\r\nSELECT\r\n${len(db or '0')}\r\n{db or '0'}\r\n".encode())
        s.sendall(b"*1\r\n$7\r\nFLUSHDB\r\n")
        got = b""
        while got.count(b"\r\n") < 2:
            got += s.recv(100)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server (the one .ci/run started, else a private one)."""
    url = os.environ.get("SWITCHYARD_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    server = PostgresServer.start()
    yield server.url
    server.remove()


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database for one test."""
    return fresh_database(postgres_server)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a Redis server (the one .ci/run started, else a private one)."""
    url = os.environ.get("SWITCHYARD_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The Redis server's URL, emptied for this test."""
    redis_flush(redis_server)
    return redis_server
