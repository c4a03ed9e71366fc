"""A real Postgres restart, on a private throw-away server (``pgserver``), under the store and under
a running execution: nothing is lost, nothing is doubled, and the execution finishes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from engine import Engine
from engine._postgres_store import PostgresEventStore
from engine.errors import ConcurrencyConflict, StoreUnavailable
from plugins.local import LocalExecutor
from tests.conftest import PostgresControl, throwaway_postgres

from . import _workflows as wf
from .test_engine import assert_log_is_sane
from .test_store_contract import lifecycle, new_id

Restart = Callable[[], None]


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[tuple[str, Restart]]:
    """A Postgres of this module's own, and a function that restarts it (fast shutdown)."""
    with throwaway_postgres("a server this test may restart") as (server, pgdata):
        control = PostgresControl(server, pgdata)
        yield control.dsn, control.restart


async def append_until_it_lands(store: PostgresEventStore, eid: str, expected: int, events: list) -> None:
    """Retry an append the restart interrupted; a conflict means an earlier try did commit."""
    with anyio.fail_after(30):
        while True:
            try:
                await store.append(eid, expected, events)
                return
            except StoreUnavailable:
                await anyio.sleep(0.1)
            except ConcurrencyConflict:
                assert await store.current_version(eid) == expected + len(events)
                return


async def test_store_survives_a_restart(private_postgres: tuple[str, Restart]) -> None:
    dsn, restart = private_postgres
    eid = new_id()
    events = lifecycle(eid)
    async with PostgresEventStore(dsn) as store, PostgresEventStore(dsn) as watcher:
        await store.append(eid, 0, events[:2])
        await anyio.to_thread.run_sync(restart)
        await append_until_it_lands(store, eid, 2, events[2:4])
        assert await store.read(eid) == events[:4]
        # the listener came back: an append by another instance wakes it
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(watcher.wait_for_changes, 10.0)
                await anyio.sleep(0.2)
                await store.append(eid, 4, events[4:])
        assert [e.version for e in await watcher.read(eid)] == list(range(1, len(events) + 1))
        # and leases are taken again on the new session
        assert await store.claim(eid)


async def test_an_execution_finishes_across_a_restart(
    private_postgres: tuple[str, Restart], side_effects: Path
) -> None:
    dsn, restart = private_postgres
    async with Engine(
        PostgresEventStore(dsn, schema="restart_e2e"), {"local": LocalExecutor()}, retry_delay=0.05
    ) as eng:
        handle = await eng.launch(wf.crashable, n=6)
        with anyio.fail_after(30):
            while not (await eng.history(handle.execution_id))[-1].node_id:  # noqa: ASYNC110 - until a node ran
                await anyio.sleep(0.02)
        await anyio.to_thread.run_sync(restart)
        assert await handle.outputs(timeout=60) == 6 + sum(x + 1 for x in (10, 20, 30, 40))
        assert_log_is_sane(await eng.history(handle.execution_id))
