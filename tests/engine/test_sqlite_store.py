"""SQLite-only behaviour of `SqliteEventStore`: start-up errors are one typed error naming the path and the fix."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from engine._sqlite_store import _CHECKPOINT_EVERY, SqliteEventStore
from engine.errors import ConfigError, SlipstreamError, StoreUnavailable
from tests.engine.test_store_contract import created, new_id, queued

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


async def test_an_append_waits_for_another_writer_off_the_event_loop(tmp_path: Path) -> None:
    """Calls run on the loop's thread only when SQLite answers at once: an append that meets
    another process's write lock waits for it on a worker thread, the loop running meanwhile, and
    succeeds once the lock is gone (within ``busy_timeout``)."""
    path = tmp_path / "events.db"
    async with SqliteEventStore(path) as store:
        eid = new_id()
        await store.append(eid, 0, [created(eid)])
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            appending = asyncio.create_task(store.append(eid, 1, [queued(eid, 2)]))
            ticks = 0
            for _ in range(30):  # 0.3 s of a ticking loop while the append waits
                await asyncio.sleep(0.01)
                ticks += 1
                assert not appending.done(), appending
            holder.execute("COMMIT")
        finally:
            holder.close()
        assert await asyncio.wait_for(appending, timeout=10) == 2
        assert ticks == 30
        # past busy_timeout it is still a StoreUnavailable, raised without blocking the loop
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            store._busy_timeout = 0.2
            started = asyncio.get_running_loop().time()
            ticker = asyncio.create_task(asyncio.sleep(0.05))
            with pytest.raises(StoreUnavailable, match="locked"):
                await store.append(eid, 2, [queued(eid, 3)])
            assert ticker.done() and asyncio.get_running_loop().time() - started >= 0.15
        finally:
            holder.execute("ROLLBACK")
            holder.close()


async def _wal_frames_after_appends(path: Path, appends: int) -> int:
    """Frames in the WAL (since it last restarted) after ``appends`` appends through a store."""
    async with SqliteEventStore(path) as store:
        eid = new_id()
        version = await store.append(eid, 0, [created(eid)])
        for _ in range(appends):
            version = await store.append(eid, version, [queued(eid, version + 1)])
        if store._checkpoint is not None:
            await store._checkpoint
        probe = sqlite3.connect(path, isolation_level=None)
        try:
            return int(probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
        finally:
            probe.close()


async def test_the_wal_is_checkpointed_on_the_worker_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's own checkpoints (run by the committing call, fsyncs included, on the loop's
    thread) are off; the store checkpoints every `_CHECKPOINT_EVERY` writes on the worker thread
    instead, so the WAL does not grow with the log."""
    appends = 3 * _CHECKPOINT_EVERY
    checkpointed = await _wal_frames_after_appends(tmp_path / "a.db", appends)
    monkeypatch.setattr("engine._sqlite_store._CHECKPOINT_EVERY", 10 * appends)
    never = await _wal_frames_after_appends(tmp_path / "b.db", appends)
    assert checkpointed < never / 2, (checkpointed, never)
