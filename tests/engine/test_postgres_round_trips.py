"""What the control loop costs Postgres, counted: one transaction per node of a chain and no read
after the first; reads that arrive together share a query; appends keep their connection.

Speed itself is measured by ``python -m benchmarks server``; these tests pin the behaviour that
the figures rest on, by counting calls, never by timing them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from engine import Engine, task, workflow
from engine._postgres_store import PostgresEventStore
from engine.interfaces import StoredEvent
from plugins.local import LocalExecutor
from tests.engine.test_store_contract import lifecycle, new_id

CHAIN = 12


@task
async def bump(x: int) -> int:
    return x + 1


@workflow
def chain(x: int = 0) -> int:
    value = bump(x=x)
    for _ in range(CHAIN - 1):
        value = bump(x=value)
    return value


class CountingStore(PostgresEventStore):
    """Counts transactions (appends written), log reads and every query sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()

    async def _write(self, batches: Sequence[tuple[str, int, Sequence[StoredEvent]]]) -> None:
        self.calls["transactions"] += 1
        await super()._write(batches)

    async def _read_records(self, execution_id: str, after: int) -> list[StoredEvent]:
        self.calls["reads"] += 1
        return await super()._read_records(execution_id, after)

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        self.calls["queries"] += 1
        return await super()._fetch(query, *args)


@pytest.fixture
async def store(postgres_database: str, postgres_schema: str) -> AsyncIterator[CountingStore]:
    async with CountingStore(postgres_database, schema=postgres_schema, max_size=4) as s:
        yield s


async def test_a_chain_costs_one_transaction_per_node_and_reads_its_log_once(store: CountingStore) -> None:
    async with Engine(store, {"local": LocalExecutor()}) as engine:
        assert await (await engine.launch(chain)).outputs(timeout=60) == CHAIN  # warm: leases, statements
        store.calls.clear()
        handle = await engine.launch(chain)
        await handle.wait(timeout=60)
        calls = store.calls.copy()
        assert await handle.outputs() == CHAIN
        history = await engine.history(handle.execution_id)
    # the launch, the round that starts the first node, one round per node after it (its success,
    # the next node's queued and running events together), and the end
    assert calls["transactions"] == CHAIN + 2
    assert len(history) == 3 * CHAIN + 3  # created, started, three per node, succeeded
    # the first round reads the log; every later round trusts its cached state
    assert calls["reads"] == 1


async def test_reads_that_arrive_together_share_a_query_and_get_their_own_events(store: CountingStore) -> None:
    ids = [new_id() for _ in range(6)]
    for execution_id in ids:
        await store.append(execution_id, 0, lifecycle(execution_id)[:3])
    store.calls.clear()
    whole, *rest = await asyncio.gather(
        *(store.read(execution_id) for execution_id in ids), store.read(ids[0], after=1), store.read(ids[1], after=3)
    )
    assert [e.execution_id for e in whole] == [ids[0]] * 3
    assert [[(e.execution_id, e.version) for e in events] for events in rest[:5]] == [
        [(execution_id, v) for v in (1, 2, 3)] for execution_id in ids[1:]
    ]
    assert [e.version for e in rest[5]] == [2, 3]  # same execution, its own starting point
    assert rest[6] == []
    assert store.calls["reads"] == 8
    assert store.calls["queries"] == 2  # the first read at once, the seven that queued behind it together


async def test_appends_keep_one_connection_and_take_another_after_it_is_lost(store: CountingStore) -> None:
    execution_id = new_id()
    events = lifecycle(execution_id)
    await store.append(execution_id, 0, events[:2])
    writer = store._writer
    assert writer is not None
    await store.append(execution_id, 2, events[2:3])
    assert store._writer is writer  # held between appends, not handed back to the pool
    admin = await asyncpg.connect(store._dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", writer.get_server_pid())
    finally:
        await admin.close()
    await asyncio.sleep(0.1)  # the client notices the session is gone
    await store.append(execution_id, 3, events[3:4])  # on a fresh connection: nothing to retry
    assert store._writer is not writer
    assert [e.version for e in await store.read(execution_id)] == [1, 2, 3, 4]


async def test_verify_and_rebuild_read_a_page_of_executions_in_a_few_queries(store: CountingStore) -> None:
    """``executions verify`` and ``admin rebuild-projections`` walk every execution: a page of
    them costs a listing, a query for the rows and two for the logs, not two queries each."""
    from engine._verify import rebuild_projections, verify_store

    ids = [new_id() for _ in range(60)]
    await store.append_many([(eid, 0, lifecycle(eid)) for eid in ids])
    store.calls.clear()
    checks = [check async for check in verify_store(store)]
    assert {c.execution_id for c in checks} == set(ids) and all(c.ok for c in checks)
    assert store.calls["queries"] <= 8, store.calls  # was 2 per execution: 120
    store.calls.clear()
    report = await rebuild_projections(store)
    assert report.executions == 60 and not report.rewritten
    assert store.calls["queries"] <= 8, store.calls
