"""The catalog's own migrations (``catalog/migrations``) give SQLite and Postgres the same tables,
columns, keys and indexes, and live beside the event store's tables without touching them."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog import PostgresCatalog, SqliteCatalog
from catalog._sql_catalog import load_catalog_migrations
from engine._postgres_store import PostgresEventStore
from tests.engine.test_store_schema import Schema, postgres_schema_of, sqlite_schema_of

TABLES = [
    "catalog_artifacts",
    "catalog_datasets",
    "catalog_lineage",
    "catalog_migrations",
    "catalog_partitions",
    "catalog_reservations",
    "catalog_tags",
]


@pytest.fixture
async def both_schemas(postgres_database: str, postgres_schema: str, tmp_path: Path) -> tuple[Schema, Schema]:
    async with PostgresCatalog(postgres_database, schema=postgres_schema):
        pass
    async with SqliteCatalog(tmp_path / "catalog.db"):
        pass
    return await postgres_schema_of(postgres_database, postgres_schema), sqlite_schema_of(tmp_path / "catalog.db")


def test_both_dialects_have_the_same_migration_versions() -> None:
    postgres = [(m.version, m.name) for m in load_catalog_migrations("postgres")]
    sqlite = [(m.version, m.name) for m in load_catalog_migrations("sqlite")]
    assert postgres == sqlite and [v for v, _ in postgres] == list(range(1, len(postgres) + 1))


async def test_same_tables_columns_and_indexes(both_schemas: tuple[Schema, Schema]) -> None:
    postgres, sqlite = both_schemas
    assert postgres.tables == sqlite.tables == TABLES
    assert postgres.columns == sqlite.columns
    assert postgres.primary_keys == sqlite.primary_keys
    assert postgres.indexes == sqlite.indexes
    assert ("catalog_artifacts", (("cache_key", "asc"), ("created_at", "desc")), False) in sqlite.indexes


async def test_the_catalog_shares_a_schema_with_the_event_store(postgres_database: str, postgres_schema: str) -> None:
    async with PostgresEventStore(postgres_database, schema=postgres_schema):
        pass
    async with PostgresCatalog(postgres_database, schema=postgres_schema):
        pass
    async with PostgresCatalog(postgres_database, schema=postgres_schema):  # migrations run once
        pass
    tables = (await postgres_schema_of(postgres_database, postgres_schema)).tables
    assert set(TABLES) <= set(tables) and {"events", "executions", "schema_migrations"} <= set(tables)
