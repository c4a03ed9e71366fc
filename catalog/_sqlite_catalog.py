"""The embedded catalog: one SQLite file under the state directory (DESIGN section 9)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from catalog._sql_catalog import SqlCatalog, load_catalog_migrations, split_statements
from engine.errors import ConfigError, StoreUnavailable

__all__ = ["SqliteCatalog"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection, limiter: anyio.CapacityLimiter, path: Path) -> None:
        self._conn = conn
        self._limiter = limiter
        self._path = path

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return await self._run(lambda: self._conn.execute(sql, args).fetchall())

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._run(lambda: self._conn.execute(sql, args).rowcount)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._run(lambda: self._conn.executemany(sql, rows))

    async def _run(self, call: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(call, limiter=self._limiter)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite catalog {self._path} failed: {exc}") from exc


class SqliteCatalog(SqlCatalog):
    """The catalog in a SQLite file (WAL mode), shared safely by processes on one machine.

    Args:
        path: the database file (``<state_dir>/catalog.db`` for an embedded engine).
        busy_timeout: seconds to wait for another process's write lock.
    """

    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self._path = Path(path)
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._lock = anyio.Lock()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    async def start(self) -> None:
        """Open the file and apply pending migrations.

        Raises:
            ConfigError: the directory cannot be created or the file is not a SQLite database.
        """
        if self._conn is not None:
            return
        try:
            self._conn = await anyio.to_thread.run_sync(self._open, limiter=self._limiter)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"cannot use {self._path} as the SQLite catalog ({exc}); point the state directory "
                "(SLIPSTREAM_STATE_DIR) at a writable directory"
            ) from exc

    async def close(self) -> None:
        """Close the file (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    def _open(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # one call at a time through the limiter: sqlite3 needs no more than that across threads
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")  # concurrent openers apply each migration once
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS catalog_migrations ("
                    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
                )
                applied = {row[0] for row in conn.execute("SELECT version FROM catalog_migrations")}
                for migration in load_catalog_migrations("sqlite"):
                    if migration.version not in applied:
                        for statement in split_statements(migration.sql):
                            conn.execute(statement)
                        conn.execute(
                            "INSERT INTO catalog_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                            (migration.version, migration.name, self.to_db_time(datetime.now(UTC))),
                        )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteTx]:
        if self._conn is None:
            raise RuntimeError("SqliteCatalog is not started: `await catalog.start()` (or `async with`) first")
        conn = self._conn
        tx = _SqliteTx(conn, self._limiter, self._path)
        async with self._lock:
            await tx.execute("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(conn.rollback, limiter=self._limiter)
                raise
            with anyio.CancelScope(shield=True):
                await tx.execute("COMMIT")

    def to_db_time(self, at: datetime) -> int:
        return (at - _EPOCH) // timedelta(microseconds=1)

    def from_db_time(self, value: Any) -> datetime:
        return _EPOCH + timedelta(microseconds=int(value))

    def __str__(self) -> str:
        return f"SqliteCatalog({self._path})"
