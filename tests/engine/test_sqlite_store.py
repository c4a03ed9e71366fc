"""SQLite-only behaviour of `SqliteEventStore`: start-up errors are one typed error naming the path and the fix."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from engine._sqlite_store import SqliteEventStore
from engine.errors import ConfigError, SlipstreamError, StoreUnavailable

FIX = "point --state-dir or SLIPSTREAM_STATE_DIR (Engine.embedded(state_dir=...)) at a writable directory"


async def start_error(path: Path, **options: float) -> SlipstreamError:
    store = SqliteEventStore(path, **options)
    with pytest.raises(SlipstreamError) as info:
        await store.start()
    assert store._conn is None
    assert info.value.__cause__ is not None  # chained to the OS's or sqlite3's error
    return info.value


async def test_state_dir_that_is_a_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("")
    error = await start_error(state / "events.db")
    assert isinstance(error, ConfigError)
    assert (
        str(error)
        == f"cannot use {state} as the state directory: {state} is a file, where a directory should be; {FIX}"
    )


async def test_state_dir_below_a_file_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    error = await start_error(blocker / "a" / "b" / "events.db")
    assert isinstance(error, ConfigError)
    assert f"{blocker} is a file, where a directory should be" in str(error) and FIX in str(error)


async def test_database_path_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "events.db").mkdir()
    error = await start_error(tmp_path / "events.db")
    assert isinstance(error, ConfigError)
    assert f"cannot use {tmp_path / 'events.db'} as the SQLite event store" in str(error) and FIX in str(error)


async def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"definitely not sqlite " * 200)
    error = await start_error(path)
    assert isinstance(error, ConfigError)
    assert f"{path} in the state directory is not a SQLite database" in str(error) and "move it away" in str(error)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
async def test_read_only_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o500)
    try:
        error = await start_error(state / "events.db")
    finally:
        state.chmod(0o700)
    assert isinstance(error, ConfigError) and FIX in str(error)


async def test_file_locked_by_another_process_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with SqliteEventStore(path):
        pass
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        error = await start_error(path, busy_timeout=0.05)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert isinstance(error, StoreUnavailable)
    assert f"SQLite event store {path} is locked by another process" in str(error)
    async with SqliteEventStore(path):  # and it opens once the lock is gone
        pass
