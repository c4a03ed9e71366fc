"""Engines with a catalog on both backends (SQLite embedded, Postgres server), for the cache tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from catalog import LocalBlobStore, PostgresCatalog, SqliteCatalog
from engine import Engine
from engine._postgres_store import PostgresEventStore
from engine._sqlite_store import SqliteEventStore
from plugins.local import LocalExecutor

EngineFactory = Callable[..., Engine]


@pytest.fixture(params=["sqlite", "postgres"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_engine(backend_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> EngineFactory:
    """Engines sharing one event log, blob store and catalog (each call builds new instances)."""
    if backend_kind == "postgres":
        dsn = request.getfixturevalue("postgres_database")
        schema = request.getfixturevalue("postgres_schema")

    def factory(**options: object) -> Engine:
        if backend_kind == "sqlite":
            store, catalog = SqliteEventStore(tmp_path / "events.db"), SqliteCatalog(tmp_path / "catalog.db")
        else:
            store, catalog = PostgresEventStore(dsn, schema=schema), PostgresCatalog(dsn, schema=schema)
        options.setdefault("retry_delay", 0.05)
        options.setdefault("blobs", LocalBlobStore(tmp_path / "blobs"))
        options.setdefault("catalog", catalog)
        return Engine(store, {"local": LocalExecutor()}, **options)  # type: ignore[arg-type]

    return factory


@pytest.fixture
def side_effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "side-effects"
    directory.mkdir()
    monkeypatch.setenv("SLIPSTREAM_TEST_SIDE_EFFECTS", str(directory))
    return directory


def runs(side_effects: Path, name: str) -> list[str]:
    """The details logged by each completed run of the task ``name``."""
    path = side_effects / f"{name}.log"
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()] if path.exists() else []


async def flushed(engine: Engine) -> None:
    """Wait for the records the engine's loop is still writing to its catalog (in the background)."""
    controller = engine._controller
    assert controller is not None and controller.catalog is not None
    await controller.catalog.flush()
