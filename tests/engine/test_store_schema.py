"""The SQLite and Postgres schemas, after all migrations, have the same tables, columns and indexes.

Each store applies its own dialect's files from ``engine/migrations``; this test reads both schemas
back from the real databases and compares them, so that a migration written for one dialect only
fails here instead of drifting silently. It also checks that a database made by an older version is
brought up to date, with its data kept.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine._postgres_store import PostgresEventStore
from engine._projection import to_micros
from engine._sqlite_store import SqliteEventStore, _statements
from engine._store_common import load_migrations
from tests.engine.test_store_contract import created, new_id

# Differences on purpose, with the reason. Anything else that differs is drift.
POSTGRES_ONLY_COLUMNS = {
    # the writing transaction id: Postgres commits can land out of seq order, and read_all must not
    # pass a lower seq still to commit; SQLite has a single writer, so seq order is commit order
    ("events", "xid"),
}
# Tables of the Postgres schema only: the tenants' grants that row-level security is keyed on
# (migration 0006; a SQLite file has no roles, so no tenancy below the engine's own scope), the
# sessions that tail the log, for which appends NOTIFY (migration 0010; SQLite has no NOTIFY), and
# the serving processes' beats (migration 0011; a SQLite lease is a file lock, gone with its process).
POSTGRES_ONLY_TABLES = {"slipstream_grants", "slipstream_members", "slipstream_tailers"}
# Column types: SQLite keeps timestamps as integer microseconds (UTC), see 0001_events.sqlite.sql.
SQLITE_TYPE_OF = {
    "text": "TEXT",
    "integer": "INTEGER",
    "bigint": "INTEGER",
    "bytea": "BLOB",
    "timestamp with time zone": "INTEGER",
}

Column = tuple[str, str, str, bool]  # table, column, SQLite type, not null
Index = tuple[str, tuple[tuple[str, str], ...], bool]  # table, ((column, asc|desc), ...), unique


class Schema:
    """What a schema is made of, without names of indexes (each dialect names them its own way)."""

    def __init__(self, columns: Iterable[Column], primary_keys: dict[str, tuple[str, ...]], indexes: Iterable[Index]):
        self.columns = sorted(columns)
        self.tables = sorted({c[0] for c in self.columns})
        self.primary_keys = primary_keys
        self.indexes = sorted(indexes)


_PG_COLUMNS = """
SELECT table_name, column_name, data_type, is_nullable = 'NO' AS not_null
FROM information_schema.columns
WHERE table_schema = $1
"""

_PG_PRIMARY_KEYS = """
SELECT t.relname AS table_name,
       array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.ord) AS columns
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = $1 AND c.contype = 'p'
"""

# Every index that is not a primary key's, with its columns in order and their direction
# (bit 0 of pg_index.indoption is DESC).
_PG_INDEXES = """
SELECT t.relname AS table_name, ix.indisunique AS is_unique,
       array(SELECT a.attname FROM unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.ord) AS columns,
       array(SELECT (o.opt & 1) = 1 FROM unnest(ix.indoption::int2[]) WITH ORDINALITY AS o(opt, ord)
             ORDER BY o.ord) AS descending
FROM pg_index ix
JOIN pg_class t ON t.oid = ix.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = $1 AND NOT ix.indisprimary
"""


async def postgres_schema_of(dsn: str, schema: str) -> Schema:
    conn = await asyncpg.connect(dsn)
    try:
        columns = await conn.fetch(_PG_COLUMNS, schema)
        keys = await conn.fetch(_PG_PRIMARY_KEYS, schema)
        indexes = await conn.fetch(_PG_INDEXES, schema)
    finally:
        await conn.close()
    columns = [r for r in columns if r["table_name"] not in POSTGRES_ONLY_TABLES]
    keys = [r for r in keys if r["table_name"] not in POSTGRES_ONLY_TABLES]
    indexes = [r for r in indexes if r["table_name"] not in POSTGRES_ONLY_TABLES]
    primary_keys = {r["table_name"]: tuple(r["columns"]) for r in keys}
    return Schema(
        columns=[
            (
                r["table_name"],
                r["column_name"],
                SQLITE_TYPE_OF.get(r["data_type"], r["data_type"]),
                r["not_null"] or r["column_name"] in primary_keys.get(r["table_name"], ()),
            )
            for r in columns
            if (r["table_name"], r["column_name"]) not in POSTGRES_ONLY_COLUMNS
        ],
        primary_keys=primary_keys,
        indexes=[
            (
                r["table_name"],
                tuple((c, "desc" if d else "asc") for c, d in zip(r["columns"], r["descending"], strict=True)),
                r["is_unique"],
            )
            for r in indexes
        ],
    )


def sqlite_schema_of(path: Path) -> Schema:
    conn = sqlite3.connect(path)
    try:
        tables = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        ]
        columns: list[Column] = []
        primary_keys: dict[str, tuple[str, ...]] = {}
        indexes: list[Index] = []
        for table in tables:
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()  # cid, name, type, notnull, default, pk
            key = tuple(name for *_, name, _, _, _, pk in sorted(info, key=lambda r: r[5]) if pk)
            if key:
                primary_keys[table] = key
            # SQLite lets a non-INTEGER primary key hold NULL (a legacy quirk); the stores never write one
            columns += [(table, name, kind.upper(), bool(notnull or pk)) for _, name, kind, notnull, _, pk in info]
            for _, name, unique, origin, _ in conn.execute(f"PRAGMA index_list({table})"):
                if origin == "pk":
                    continue  # the primary key, compared above
                parts = [r for r in conn.execute(f"PRAGMA index_xinfo({name})") if r[5]]  # key columns only
                ordered = tuple((r[2], "desc" if r[3] else "asc") for r in sorted(parts, key=lambda r: r[0]))
                indexes.append((table, ordered, bool(unique)))
    finally:
        conn.close()
    return Schema(columns=columns, primary_keys=primary_keys, indexes=indexes)


@pytest.fixture
async def both_schemas(postgres_database: str, postgres_schema: str, tmp_path: Path) -> tuple[Schema, Schema]:
    async with PostgresEventStore(postgres_database, schema=postgres_schema):
        pass
    async with SqliteEventStore(tmp_path / "events.db"):
        pass
    return await postgres_schema_of(postgres_database, postgres_schema), sqlite_schema_of(tmp_path / "events.db")


def test_both_dialects_have_the_same_migration_versions() -> None:
    postgres = [(m.version, m.name) for m in load_migrations("postgres")]
    sqlite = [(m.version, m.name) for m in load_migrations("sqlite")]
    assert postgres == sqlite
    assert [v for v, _ in postgres] == list(range(1, len(postgres) + 1)), "migration versions must not skip"


async def test_same_tables_and_columns(both_schemas: tuple[Schema, Schema]) -> None:
    postgres, sqlite = both_schemas
    assert postgres.tables == sqlite.tables == ["cursors", "events", "executions", "schema_migrations"]
    assert postgres.columns == sqlite.columns
    assert postgres.primary_keys == sqlite.primary_keys


async def test_same_indexes_and_uniqueness(both_schemas: tuple[Schema, Schema]) -> None:
    postgres, sqlite = both_schemas
    assert postgres.indexes == sqlite.indexes
    # the optimistic-concurrency key and the list_executions indexes, by name of what they serve
    assert ("events", (("execution_id", "asc"), ("version", "asc")), True) in sqlite.indexes
    assert ("executions", (("status", "asc"), ("created_at", "desc"), ("execution_id", "desc")), False) in (
        sqlite.indexes
    )


# --- upgrading a database made by version 1 ------------------------------------------------------


def sqlite_index_names(path: Path, table: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[1] for row in conn.execute(f"PRAGMA index_list({table})")}
    finally:
        conn.close()


def make_sqlite_v1(path: Path, rows: list[tuple[Any, ...]]) -> None:
    """A database as the store made it before version 2, holding ``rows`` of ``executions``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at INTEGER NOT NULL)"
        )
        first = load_migrations("sqlite")[0]
        assert first.version == 1
        for statement in _statements(first.sql):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (1, ?, 0)", (first.name,))
        conn.executemany("INSERT INTO executions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    finally:
        conn.close()


async def test_sqlite_database_of_version_1_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    now = to_micros(datetime.now(UTC))
    make_sqlite_v1(path, [("old-1", "p", "development", "wf", "succeeded", 3, now, now, None)])
    assert "executions_status_newest" not in sqlite_index_names(path, "executions")

    async with SqliteEventStore(path) as store:
        page = await store.list_executions(status="succeeded")
        assert [s.execution_id for s in page.items] == ["old-1"]
        eid = new_id()
        await store.append(eid, 0, [created(eid)])

    conn = sqlite3.connect(path)
    try:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT execution_id FROM executions WHERE status = 'running'"
                " ORDER BY created_at DESC, execution_id DESC"
            )
        )
    finally:
        conn.close()
    assert versions == [m.version for m in load_migrations("sqlite")]
    assert "executions_status_newest" in plan


async def test_postgres_schema_of_version_1_is_migrated(postgres_database: str, postgres_schema: str) -> None:
    conn = await asyncpg.connect(postgres_database)
    try:
        async with conn.transaction():
            await conn.execute(f'CREATE SCHEMA "{postgres_schema}"')
            await conn.execute(f'SET LOCAL search_path TO "{postgres_schema}"')
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            first = load_migrations("postgres")[0]
            await conn.execute(first.sql)
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (1, $1)", first.name)
    finally:
        await conn.close()

    async with PostgresEventStore(postgres_database, schema=postgres_schema) as store:
        eid = new_id()
        await store.append(eid, 0, [created(eid)])
        assert [s.execution_id for s in (await store.list_executions(status="created")).items] == [eid]

    conn = await asyncpg.connect(postgres_database, server_settings={"search_path": postgres_schema})
    try:
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        await conn.close()
    assert versions == [m.version for m in load_migrations("postgres")]
