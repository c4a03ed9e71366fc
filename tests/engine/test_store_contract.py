"""The `EventStore` contract, run against every backend (SQLite file, real Postgres, in memory)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import asyncpg
import msgspec
import pytest

from engine._chain import chain_checksums
from engine._postgres_store import PostgresEventStore
from engine._sqlite_store import SqliteEventStore
from engine.errors import ConcurrencyConflict
from engine.events import (
    Event,
    ExecutionAborted,
    ExecutionCreated,
    ExecutionFailed,
    ExecutionStarted,
    ExecutionSucceeded,
    NodeQueued,
    NodeRunning,
    NodeSucceeded,
)
from engine.interfaces import EventStore, GlobalEvent, to_records
from engine.models import ErrorInfo, WorkflowSpec
from engine.testing import InMemoryEventStore, InMemoryLog

SPEC = WorkflowSpec(name="w", inputs=[], outputs=[], nodes=[], output_bindings={})
T0 = datetime(2026, 1, 1, tzinfo=UTC)

StoreFactory = Callable[[], EventStore]


def created(
    eid: str, *, project: str = "p", domain: str = "development", workflow: str = "wf", at: datetime = T0
) -> ExecutionCreated:
    return ExecutionCreated(
        execution_id=eid,
        version=1,
        at=at,
        project=project,
        domain=domain,
        workflow=workflow,
        workflow_version="v1",
        spec=SPEC,
        inputs={},
    )


def lifecycle(eid: str, **kw: object) -> list[Event]:
    """A whole successful execution: 6 events, versions 1..6."""
    at = T0
    return [
        created(eid, **kw),  # type: ignore[arg-type]
        ExecutionStarted(execution_id=eid, version=2, at=at),
        NodeQueued(execution_id=eid, version=3, at=at, node_id="a", attempt=1),
        NodeRunning(execution_id=eid, version=4, at=at, node_id="a", attempt=1, executor="local"),
        NodeSucceeded(execution_id=eid, version=5, at=at, node_id="a", attempt=1, outputs={"o0": b"\x01"}),
        ExecutionSucceeded(execution_id=eid, version=6, at=at, outputs={"o0": b"\x01"}),
    ]


def queued(eid: str, version: int) -> NodeQueued:
    return NodeQueued(execution_id=eid, version=version, at=T0, node_id="a", attempt=version)


def new_id() -> str:
    return f"ex-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> StoreFactory:
    """A factory of store instances that all share one backing database."""
    if backend == "sqlite":
        path = tmp_path / "events.db"
        return lambda: SqliteEventStore(path)
    if backend == "memory":
        log = InMemoryLog()
        return lambda: InMemoryEventStore(log)
    dsn = request.getfixturevalue("postgres_database")
    schema = request.getfixturevalue("postgres_schema")
    return lambda: PostgresEventStore(dsn, schema=schema)


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[EventStore]:
    async with make_store() as s:
        yield s


async def raw_execute(store: EventStore, sql: str) -> None:
    """Run SQL directly against the store's database, bypassing the store."""
    if isinstance(store, SqliteEventStore):
        conn = sqlite3.connect(store.path)
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()
        return
    assert isinstance(store, PostgresEventStore)
    conn2 = await asyncpg.connect(store._dsn, server_settings={"search_path": store.schema})
    try:
        await conn2.execute(sql)
    finally:
        await conn2.close()


# --- append / read -----------------------------------------------------------------------------


async def test_append_and_read(store: EventStore) -> None:
    eid = new_id()
    events = lifecycle(eid)
    assert await store.append(eid, 0, events[:2]) == 2
    assert await store.append(eid, 2, events[2:]) == 6
    assert await store.read(eid) == events
    assert await store.read(eid, after=4) == events[4:]
    assert await store.read(eid, after=6) == []
    assert await store.current_version(eid) == 6
    assert await store.read("nope") == []
    assert await store.current_version("nope") == 0
    assert await store.get_summary("nope") is None


async def test_versions_must_be_consecutive(store: EventStore) -> None:
    eid = new_id()
    with pytest.raises(ValueError, match="number events consecutively"):
        await store.append(eid, 0, [created(eid), queued(eid, 3)])
    with pytest.raises(ValueError, match="does not follow"):
        await store.append(eid, 0, [created("other")])
    assert await store.read(eid) == []


async def test_expected_version_behind_or_ahead_conflicts(store: EventStore) -> None:
    eid = new_id()
    await store.append(eid, 0, lifecycle(eid)[:3])
    with pytest.raises(ConcurrencyConflict, match=f"execution '{eid}': expected version 2") as behind:
        await store.append(eid, 2, [queued(eid, 3)])
    assert (behind.value.expected_version, behind.value.actual_version) == (2, 3)
    with pytest.raises(ConcurrencyConflict) as ahead:
        await store.append(eid, 5, [queued(eid, 6)])
    assert (ahead.value.execution_id, ahead.value.expected_version, ahead.value.actual_version) == (eid, 5, 3)
    with pytest.raises(ConcurrencyConflict) as exists:
        await store.append(eid, 0, [created(eid)])
    assert exists.value.actual_version == 3
    assert await store.current_version(eid) == 3
    assert len(await store.read(eid)) == 3


async def test_append_many_is_atomic(store: EventStore) -> None:
    a, b, c = new_id(), new_id(), new_id()
    await store.append(b, 0, [created(b)])
    with pytest.raises(ConcurrencyConflict) as info:
        await store.append_many([(a, 0, [created(a)]), (b, 0, [created(b)]), (c, 0, [created(c)])])
    assert info.value.execution_id == b
    assert await store.read(a) == [] and await store.read(c) == []
    assert await store.get_summary(a) is None
    assert [e.version for e in await store.read(b)] == [1]

    # an execution that is ahead in an otherwise fine batch also rolls back the rest
    with pytest.raises(ConcurrencyConflict):
        await store.append_many([(a, 0, [created(a)]), (b, 4, [queued(b, 5)])])
    assert await store.read(a) == []

    assert await store.append_many([(a, 0, lifecycle(a)), (c, 0, lifecycle(c)[:2]), (b, 1, [queued(b, 2)])]) == [
        6,
        2,
        2,
    ]
    assert len(await store.read(a)) == 6 and len(await store.read(c)) == 2


async def test_append_many_rejects_an_execution_twice(store: EventStore) -> None:
    a = new_id()
    with pytest.raises(ValueError, match="appears twice"):
        await store.append_many([(a, 0, [created(a)]), (a, 1, [queued(a, 2)])])
    assert await store.read(a) == []


async def test_concurrent_appenders_exactly_one_wins(store: EventStore) -> None:
    eid = new_id()
    await store.append(eid, 0, [created(eid)])
    for round_ in range(3):
        version = await store.current_version(eid)

        async def racer(i: int, version: int = version) -> bool:
            event = NodeQueued(execution_id=eid, version=version + 1, at=T0, node_id=f"n{i}", attempt=1)
            try:
                await store.append(eid, version, [event])
            except ConcurrencyConflict as exc:
                assert exc.expected_version == version
                return False
            return True

        results = await asyncio.gather(*(racer(i) for i in range(100)))
        assert sum(results) == 1, f"round {round_}: {sum(results)} winners"
        events = await store.read(eid)
        assert [e.version for e in events] == list(range(1, version + 2))
        winner = results.index(True)
        assert events[-1].node_id == f"n{winner}"


# --- projection and listing --------------------------------------------------------------------


async def test_status_projection_follows_events(store: EventStore) -> None:
    eid = new_id()
    at = T0 + timedelta(seconds=5)
    await store.append(eid, 0, [created(eid, project="proj", domain="staging", workflow="train", at=at)])
    summary = await store.get_summary(eid)
    assert summary is not None
    assert (summary.project, summary.domain, summary.workflow, summary.status, summary.version) == (
        "proj",
        "staging",
        "train",
        "created",
        1,
    )
    assert summary.created_at == at and summary.parent is None
    await store.append(eid, 1, [ExecutionStarted(execution_id=eid, version=2, at=T0), queued(eid, 3)])
    summary = await store.get_summary(eid)
    assert summary is not None and (summary.status, summary.version) == ("running", 3)
    await store.append(eid, 3, [queued(eid, 4)])
    summary = await store.get_summary(eid)
    assert summary is not None and (summary.status, summary.version) == ("running", 4)
    failed = ExecutionFailed(execution_id=eid, version=5, at=T0, error=ErrorInfo(kind="user", message="boom"))
    await store.append(eid, 4, [failed])
    summary = await store.get_summary(eid)
    assert summary is not None and (summary.status, summary.version) == ("failed", 5)
    assert summary.updated_at >= summary.created_at


async def test_projection_edge_cases(store: EventStore) -> None:
    # an empty append writes nothing, not even a projection row
    empty = new_id()
    assert await store.append(empty, 0, []) == 0
    assert await store.get_summary(empty) is None and await store.read(empty) == []

    # a first append without ExecutionCreated still makes a row, whose version appends check
    bare = new_id()
    await store.append(bare, 0, [queued(bare, 1)])
    summary = await store.get_summary(bare)
    assert summary is not None
    assert (summary.project, summary.workflow, summary.status, summary.version) == ("", "", "created", 1)
    with pytest.raises(ConcurrencyConflict):
        await store.append(bare, 0, [queued(bare, 1)])

    # the recovered-from parent is projected, and an abort is a final status
    child = new_id()
    await store.append(child, 0, [msgspec.structs.replace(created(child), parent=bare)])
    await store.append(child, 1, [ExecutionAborted(execution_id=child, version=2, at=T0, reason="stop")])
    summary = await store.get_summary(child)
    assert summary is not None and (summary.parent, summary.status, summary.version) == (bare, "aborted", 2)
    assert [s.execution_id for s in (await store.list_executions(status="aborted")).items] == [child]


async def test_use_before_start_is_an_error(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(RuntimeError, match="not started"):
        await store.read(new_id())
    with pytest.raises(RuntimeError, match="not started"):
        await store.append("x", 0, [created("x")])


async def test_list_filters_and_pagination(store: EventStore) -> None:
    ids: list[str] = []
    for i in range(7):
        eid = f"ex-{i:02d}"
        ids.append(eid)
        project = "a" if i % 2 == 0 else "b"
        domain = "production" if i < 4 else "development"
        workflow = "w1" if i % 3 == 0 else "w2"
        # two executions share a creation time: the id breaks the tie
        at = T0 + timedelta(minutes=min(i, 5))
        await store.append(eid, 0, [created(eid, project=project, domain=domain, workflow=workflow, at=at)])
    await store.append("ex-01", 1, [ExecutionStarted(execution_id="ex-01", version=2, at=T0)])
    await store.append("ex-02", 1, lifecycle("ex-02")[1:])

    everything = await store.list_executions()
    assert [s.execution_id for s in everything.items] == list(reversed(ids))
    assert everything.next_cursor is None

    pages: list[str] = []
    cursor = None
    for _ in range(10):
        page = await store.list_executions(limit=3, cursor=cursor)
        assert len(page.items) <= 3
        pages += [s.execution_id for s in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == list(reversed(ids))

    async def ids_of(**kw: object) -> list[str]:
        return [s.execution_id for s in (await store.list_executions(**kw)).items]  # type: ignore[arg-type]

    assert await ids_of(project="a") == ["ex-06", "ex-04", "ex-02", "ex-00"]
    assert await ids_of(project="a", domain="production") == ["ex-02", "ex-00"]
    assert await ids_of(workflow="w1") == ["ex-06", "ex-03", "ex-00"]
    assert await ids_of(status="running") == ["ex-01"]
    assert await ids_of(status=["running", "succeeded"]) == ["ex-02", "ex-01"]
    assert await ids_of(status="failed") == []
    assert await ids_of(
        project="a", limit=1, cursor=(await store.list_executions(project="a", limit=2)).next_cursor
    ) == ["ex-02"]
    with pytest.raises(ValueError, match="invalid list cursor"):
        await store.list_executions(cursor="garbage!")
    with pytest.raises(ValueError, match="unknown execution status"):
        await store.list_executions(status="done")  # type: ignore[arg-type]


# --- the global log ----------------------------------------------------------------------------


async def settled_read_all(store: EventStore, count: int, after_seq: int = 0) -> list[GlobalEvent]:
    """``read_all`` once ``count`` events are visible.

    Postgres hides events above the oldest transaction still open anywhere on the server (that is
    what keeps a tailer from skipping a late commit), so on a shared server visibility may lag.
    """
    with anyio.fail_after(10):
        while len(found := await store.read_all(after_seq, limit=10_000)) < count:  # noqa: ASYNC110
            await anyio.sleep(0.05)
    return found


async def test_read_all_order_and_limit(store: EventStore) -> None:
    a, b = new_id(), new_id()
    await store.append(a, 0, lifecycle(a)[:2])
    await store.append(b, 0, lifecycle(b)[:3])
    await store.append(a, 2, lifecycle(a)[2:4])
    everything = await settled_read_all(store, 7)
    assert [(g.event.execution_id, g.event.version) for g in everything] == [
        (a, 1), (a, 2), (b, 1), (b, 2), (b, 3), (a, 3), (a, 4),
    ]  # fmt: skip
    seqs = [g.seq for g in everything]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    first = await store.read_all(0, limit=3)
    assert first == everything[:3]
    rest = await store.read_all(first[-1].seq, limit=100)
    assert rest == everything[3:]
    assert await store.read_all(everything[-1].seq, limit=10) == []
    assert await store.read_all(0, limit=0) == []


# --- durability and append-only ------------------------------------------------------------------


async def test_close_and_reopen_keeps_everything(make_store: StoreFactory) -> None:
    eid = new_id()
    store = make_store()
    await store.start()
    await store.start()  # idempotent
    await store.append(eid, 0, lifecycle(eid))
    before = (await settled_read_all(store, len(lifecycle(eid))), await store.get_summary(eid))
    await store.close()
    await store.close()  # idempotent
    async with make_store() as again:
        assert await again.read(eid) == lifecycle(eid)
        assert (await again.read_all(0), await again.get_summary(eid)) == before
        assert await again.append(eid, 6, [queued(eid, 7)]) == 7


# SQL backends only: the in-memory log offers no way to change a stored record at all.
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize(
    "sql",
    ["UPDATE events SET kind = 'X'", "DELETE FROM events", "UPDATE events SET payload = payload WHERE seq = 1"],
)
async def test_events_cannot_be_changed_or_deleted(store: EventStore, sql: str) -> None:
    eid = new_id()
    await store.append(eid, 0, lifecycle(eid))
    errors = (sqlite3.IntegrityError, asyncpg.PostgresError)
    with pytest.raises(errors, match="append-only"):
        await raw_execute(store, sql)
    assert await store.read(eid) == lifecycle(eid)


# --- change notifications ----------------------------------------------------------------------


async def test_wait_for_changes_wakes_on_append_by_another_instance(
    store: EventStore, make_store: StoreFactory
) -> None:
    # drain the wake-ups that opening the store may have produced
    await store.wait_for_changes(timeout=0.3)
    await store.wait_for_changes(timeout=0.3)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await store.wait_for_changes(timeout=0.3)
    assert loop.time() - start >= 0.25, "woke up with nothing appended"

    async with make_store() as other:
        eid = new_id()
        waiter = asyncio.create_task(store.wait_for_changes(timeout=10))
        await asyncio.sleep(0.05)
        start = loop.time()
        await other.append(eid, 0, [created(eid)])
        await asyncio.wait_for(waiter, timeout=5)
        assert loop.time() - start < 2

    # an append through the same instance also wakes it
    waiter = asyncio.create_task(store.wait_for_changes(timeout=10))
    await asyncio.sleep(0.05)
    await store.append(eid, 1, [queued(eid, 2)])
    await asyncio.wait_for(waiter, timeout=5)


async def test_a_control_loop_waiting_for_executions_hears_of_creations_and_status_changes(
    store: EventStore, make_store: StoreFactory
) -> None:
    """``executions_only``: what a control loop waits for (new work, an abort) still wakes it, from
    another instance or process, within a moment."""

    async def woken_by(append: Callable[[], Awaitable[object]]) -> float:
        with anyio.fail_after(10):
            await store.wait_for_changes(timeout=0.3, executions_only=True)  # start-up wake-ups
            await store.wait_for_changes(timeout=0.3, executions_only=True)
            waiter = asyncio.create_task(store.wait_for_changes(timeout=10, executions_only=True))
            await asyncio.sleep(0.05)
            start = loop.time()
            await append()
            await waiter
            return loop.time() - start

    loop = asyncio.get_running_loop()
    eid = new_id()
    async with make_store() as other:
        assert await woken_by(lambda: other.append(eid, 0, [created(eid)])) < 2
        started = ExecutionStarted(execution_id=eid, version=2, at=T0)
        assert await woken_by(lambda: other.append(eid, 1, [started])) < 2
        aborted = ExecutionAborted(execution_id=eid, version=3, at=T0, reason="stop")
        assert await woken_by(lambda: other.append(eid, 2, [aborted])) < 2


async def _drained(store: EventStore) -> None:
    """Swallow the calling task's start-up wake-ups (a task's first wait may return at once)."""
    await store.wait_for_changes(timeout=0.3)
    await store.wait_for_changes(timeout=0.3)


@pytest.mark.parametrize("writer", ["same", "other"])
async def test_wake_ups_are_per_consumer(store: EventStore, make_store: StoreFactory, writer: str) -> None:
    """One append wakes every consumer of one store instance: those waiting when it lands, and one
    that was busy then and waits only after another consumer has already returned."""
    loop = asyncio.get_running_loop()
    ready = [asyncio.Event() for _ in range(3)]
    busy_done = asyncio.Event()

    async def consumer(index: int, busy: asyncio.Event | None) -> float:
        await _drained(store)
        ready[index].set()
        if busy is not None:
            await busy.wait()  # "busy publishing" while the append lands and the others return
        start = loop.time()
        await store.wait_for_changes(timeout=30)
        return loop.time() - start

    waiting = [asyncio.create_task(consumer(i, None)) for i in (0, 1)]
    late = asyncio.create_task(consumer(2, busy_done))
    for event in ready:
        await asyncio.wait_for(event.wait(), timeout=10)
    await asyncio.sleep(0.05)
    async with make_store() as other:
        appender = store if writer == "same" else other
        eid = new_id()
        await appender.append(eid, 0, [created(eid)])
        assert max(await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)) < 3
        busy_done.set()
        # the late consumer was not woken yet: the other consumers' returns must not have used it up
        assert await asyncio.wait_for(late, timeout=5) < 1


async def test_a_consumer_is_woken_once_per_change(store: EventStore) -> None:
    await _drained(store)
    eid = new_id()
    await store.append(eid, 0, [created(eid)])
    with anyio.fail_after(5):  # not asyncio.wait_for: on Python 3.11 it waits in another task
        await store.wait_for_changes(timeout=30)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await store.wait_for_changes(timeout=0.3)
    assert loop.time() - start >= 0.25, "woken twice for one append"


# --- durable cursors -----------------------------------------------------------------------------


async def test_a_cursor_is_zero_until_written_and_never_moves_back(store: EventStore) -> None:
    name, other = f"relay:{new_id()}", f"subscription:{new_id()}"
    assert await store.read_cursor(name) == 0
    await store.write_cursor(name, 5)
    assert await store.read_cursor(name) == 5
    await store.write_cursor(name, 3)  # behind: ignored
    assert await store.read_cursor(name) == 5
    await store.write_cursor(name, 5)
    await store.write_cursor(name, 12)
    assert await store.read_cursor(name) == 12
    assert await store.read_cursor(other) == 0  # cursors are independent
    await store.write_cursor(other, 0)
    assert await store.read_cursor(other) == 0
    assert await store.read_cursor(name) == 12


async def test_cursor_arguments_are_checked(store: EventStore) -> None:
    with pytest.raises(ValueError, match="a durable cursor needs a non-empty name, got ''"):
        await store.write_cursor("", 1)
    with pytest.raises(
        ValueError, match=r"durable cursor 'r': seq must be an int >= 0 \(a read_all position\), got -1"
    ):
        await store.write_cursor("r", -1)


async def test_cursors_are_shared_durable_and_racing_writers_leave_the_highest(make_store: StoreFactory) -> None:
    name = f"relay:{new_id()}"
    async with make_store() as first, make_store() as second:
        await asyncio.gather(*(s.write_cursor(name, n) for n in range(1, 31) for s in (first, second)))
        assert await first.read_cursor(name) == await second.read_cursor(name) == 30
        await second.write_cursor(name, 7)
    async with make_store() as again:
        assert await again.read_cursor(name) == 30


async def test_a_cursor_write_is_not_an_append(store: EventStore) -> None:
    eid = new_id()
    await store.append(eid, 0, lifecycle(eid))
    before = await settled_read_all(store, 6)
    await store.write_cursor(f"relay:{new_id()}", before[-1].seq)
    assert await store.read_all(0) == before
    assert (await store.list_executions()).items == [await store.get_summary(eid)]


def _batches(ids: Sequence[str]) -> list[tuple[str, int, Sequence[Event]]]:
    return [(eid, 0, lifecycle(eid)) for eid in ids]


async def test_large_batch_round_trip(store: EventStore) -> None:
    ids = [new_id() for _ in range(300)]
    assert await store.append_many(_batches(ids)) == [6] * 300
    everything = await settled_read_all(store, 1800)
    assert len(everything) == 1800
    assert [g.event.version for g in everything[:6]] == [1, 2, 3, 4, 5, 6]
    assert (await store.list_executions(status="succeeded", limit=1000)).items[0].status == "succeeded"


# --- leases ----------------------------------------------------------------------------------------


def _apart_from(eid: str) -> str:
    """A new id whose lease bucket is not ``eid``'s in any store: the SQLite and Postgres stores
    lease by bucket (4,096 and 1,024 of them), and names that share one are owned together."""
    from engine._leases import bucket_of
    from engine._pg_leases import lease_bucket

    return next(
        n for n in iter(new_id, None) if lease_bucket(n) != lease_bucket(eid) and bucket_of(n) != bucket_of(eid)
    )


async def test_a_lease_is_held_by_one_store_at_a_time(make_store: StoreFactory) -> None:
    eid = new_id()
    other = _apart_from(eid)
    async with make_store() as first, make_store() as second:
        assert await first.claim(eid)
        assert await first.claim(eid)  # holding it again is cheap and true
        assert not await second.claim(eid)
        assert await second.claim(other)
        await first.release(eid)
        assert await second.claim(eid)
        assert not await first.claim(eid)


async def test_closing_a_store_releases_its_leases(make_store: StoreFactory) -> None:
    eid = new_id()
    async with make_store() as survivor:
        owner = make_store()
        await owner.start()
        assert await owner.claim(eid)
        assert not await survivor.claim(eid)
        await owner.close()
        assert await survivor.claim(eid)


async def test_many_contenders_one_owner(make_store: StoreFactory) -> None:
    eid = new_id()
    stores = [make_store() for _ in range(5)]
    for s in stores:
        await s.start()
    try:
        results = await asyncio.gather(*(s.claim(eid) for s in stores))
        assert sorted(results) == [False] * 4 + [True]
    finally:
        for s in stores:
            await s.close()


async def test_a_singleton_lease_under_a_name_that_is_no_execution(make_store: StoreFactory) -> None:
    """What the event-stream relay does: one holder of ``relay:<stream>`` among all store instances,
    released by `release` and by `close` (a crash), and then free for another."""
    name = f"relay:SLIPSTREAM-{new_id()}"
    async with make_store() as second:
        first = make_store()
        await first.start()
        assert await first.claim(name)
        assert await first.claim(name)
        assert not await second.claim(name)
        await first.release(name)
        assert await second.claim(name)
        assert not await first.claim(name)
        await second.release(name)
        assert await first.claim(name)
        await first.close()
        assert await second.claim(name)


# --- the checksum chain, and what verify and rebuild-projections need ---------------------------


async def test_every_backend_chains_the_same_checksums(store: EventStore) -> None:
    eid = new_id()
    events = lifecycle(eid)
    await store.append(eid, 0, events[:2])
    await store.append(eid, 2, events[2:])
    records = await store.read_records(eid)
    expected = chain_checksums(eid, None, to_records(eid, 0, events))
    assert [r.checksum for r in records] == expected  # one chain, whichever store wrote it
    assert len(set(expected)) == 6 and all(len(c) == 32 for c in expected)
    assert [e.version for e in await store.read(eid, after=4)] == [5, 6]


async def test_execution_ids_pages_the_log_in_id_order(store: EventStore) -> None:
    ids = sorted(f"ex-ids-{uuid.uuid4().hex[:8]}-{i}" for i in range(5))
    for eid in ids:
        await store.append(eid, 0, [created(eid)])
    mine = [e for e in await store.execution_ids("ex-ids-", 1000) if e in ids]
    assert mine == ids
    page = await store.execution_ids(ids[1], 2)
    assert page == ids[2:4]


async def test_quarantine_changes_the_projection_only(store: EventStore) -> None:
    eid = new_id()
    await store.append(eid, 0, lifecycle(eid)[:2])
    await store.quarantine(eid)
    summary = await store.get_summary(eid)
    assert summary is not None and (summary.status, summary.version) == ("quarantined", 2)
    assert [s.execution_id for s in (await store.list_executions(status="quarantined")).items] == [eid]
    assert len(await store.read(eid)) == 2
    await store.append(eid, 2, [queued(eid, 3)])  # appends still check the version only


async def test_replace_summaries_writes_only_rows_whose_log_has_not_moved(store: EventStore) -> None:
    fresh, moved, orphan = new_id(), new_id(), new_id()
    for eid in (fresh, moved):
        await store.append(eid, 0, lifecycle(eid)[:2])
    row = await store.get_summary(fresh)
    assert row is not None
    wrong = msgspec.structs.replace(row, workflow="edited", status="failed")
    stale = msgspec.structs.replace(row, execution_id=moved, version=1)
    ghost = msgspec.structs.replace(row, execution_id=orphan, version=0)
    assert sorted(await store.replace_summaries([wrong, stale, ghost])) == [moved]
    assert await store.get_summary(fresh) == wrong
    assert (await store.get_summary(orphan)) == ghost  # a row without events, as a script might add
    assert sorted(await store.replace_summaries([], [orphan, moved])) == [moved]  # moved has events
    assert await store.get_summary(orphan) is None
    assert (await store.get_summary(moved)) is not None
