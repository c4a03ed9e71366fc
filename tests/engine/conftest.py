"""Engines on both event stores, for the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest

from catalog import LocalBlobStore
from engine import Engine
from engine._postgres_store import PostgresEventStore
from engine._sqlite_store import SqliteEventStore
from plugins.local import LocalExecutor

EngineFactory = Callable[..., AbstractAsyncContextManager[Engine]]


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_engine(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> EngineFactory:
    """Build engines sharing one store (so a test can stop one and open another on the same log)."""
    if store_kind == "postgres":
        dsn = request.getfixturevalue("postgres_database")
        schema = request.getfixturevalue("postgres_schema")

    def factory(**options: object) -> Engine:
        if store_kind == "sqlite":
            store = SqliteEventStore(tmp_path / "events.db")
        else:
            store = PostgresEventStore(dsn, schema=schema)
        options.setdefault("retry_delay", 0.05)
        options.setdefault("blobs", LocalBlobStore(tmp_path / "blobs"))
        return Engine(store, {"local": LocalExecutor()}, **options)  # type: ignore[arg-type]

    return factory


@pytest.fixture
async def eng(make_engine: EngineFactory) -> AsyncIterator[Engine]:
    async with make_engine() as engine:
        yield engine


@pytest.fixture
def side_effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "side-effects"
    directory.mkdir()
    monkeypatch.setenv("SLIPSTREAM_TEST_SIDE_EFFECTS", str(directory))
    return directory


def runs(side_effects: Path, name: str, execution_id: str | None = None) -> int:
    """How many times the task logged ``name`` completed (in ``execution_id`` only, if given).

    Filter by execution where an earlier test's thread may still be finishing: threads cannot be
    killed, so a cancelled sync task can log after its test ended.
    """
    path = side_effects / f"{name}.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return sum(1 for line in lines if execution_id is None or line.split()[0] == execution_id)


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition on files that task threads write (no event to await there)."""
    with anyio.fail_after(timeout):
        # polled: the writer is a task thread or another process, which cannot set an anyio.Event
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.02)
