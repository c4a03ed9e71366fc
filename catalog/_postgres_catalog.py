"""The server catalog: tables in Postgres, next to the event log (DESIGN section 9)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from catalog._sql_catalog import SqlCatalog, load_catalog_migrations
from engine.errors import AccessDenied, ConfigError, StoreUnavailable

__all__ = ["PostgresCatalog"]

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PLACEHOLDER = re.compile(r"\?")
_MIGRATION_LOCK = 0x51_1957_CA7A  # advisory lock serialising concurrent migrations of the catalog
_UNAVAILABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)


def _user_of(dsn: str) -> str:
    """The user a URL DSN names, for messages."""
    try:
        return unquote(urlsplit(dsn).username or "") or "(the DSN's user)"
    except ValueError:
        return "(the DSN's user)"


def _dollars(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


class _PgTx:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return [tuple(row) for row in await self._conn.fetch(_dollars(sql), *args)]

    async def execute(self, sql: str, *args: Any) -> int:
        status = await self._conn.execute(_dollars(sql), *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._conn.executemany(_dollars(sql), rows)


class PostgresCatalog(SqlCatalog):
    """The catalog in Postgres through an asyncpg pool; migrations applied at `start`.

    Args:
        dsn: a libpq URL (the event log's database, in server mode).
        schema: the schema holding the tables; created if missing.
        min_size, max_size: pool bounds.
    """

    name = "postgres"

    def __init__(self, dsn: str, *, schema: str = "public", min_size: int = 1, max_size: int = 5) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"invalid schema name {schema!r}: use letters, digits and underscores")
        self._dsn = dsn
        self._schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        """Apply pending migrations and open the pool.

        Raises:
            StoreUnavailable: Postgres cannot be reached.
            ConfigError: the DSN, database or user is refused.
        """
        if self._pool is not None:
            return
        try:
            await self._migrate()
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                server_settings={"search_path": f'"{self._schema}"', "application_name": "slipstream-catalog"},
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"the Postgres catalog cannot reach its database: {exc}") from exc
        except (asyncpg.PostgresError, ValueError) as exc:
            raise ConfigError(f"the Postgres catalog cannot use its database ({exc}); check the DSN and user") from exc

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _migrate(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
        try:
            if await self._migrated(conn):
                return
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
                await conn.execute(f'SET LOCAL search_path TO "{self._schema}"')
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS catalog_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                applied = {r["version"] for r in await conn.fetch("SELECT version FROM catalog_migrations")}
                for migration in load_catalog_migrations("postgres"):
                    if migration.version not in applied:
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "INSERT INTO catalog_migrations (version, name) VALUES ($1, $2)",
                            migration.version,
                            migration.name,
                        )
        finally:
            await conn.close()

    async def _migrated(self, conn: asyncpg.Connection) -> bool:
        """Whether every migration is applied already: then no DDL and no lock are needed, so a
        role that may not create tables (a tenant under row-level security) starts as well."""
        table = f'"{self._schema}".catalog_migrations'
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            return False
        applied = {r[0] for r in await conn.fetch(f"SELECT version FROM {table}")}
        return {m.version for m in load_catalog_migrations("postgres")} <= applied

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgTx]:
        if self._pool is None:
            raise RuntimeError("PostgresCatalog is not started: `await catalog.start()` (or `async with`) first")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield _PgTx(conn)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"the Postgres catalog lost its database: {exc}") from exc
        except asyncpg.InsufficientPrivilegeError as exc:  # row-level security (migration 0002), privileges
            raise AccessDenied(_user_of(self._dsn), str(exc)) from exc

    def to_db_time(self, at: datetime) -> datetime:
        return at

    def from_db_time(self, value: Any) -> datetime:
        return value.astimezone(UTC)

    def __str__(self) -> str:
        return f"PostgresCatalog(schema={self._schema})"
