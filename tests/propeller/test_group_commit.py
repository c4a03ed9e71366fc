"""Group commit: rounds of different executions that append while a write is in flight share one
transaction, and a conflict in a shared batch fails only the round that lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from engine._sqlite_store import SqliteEventStore
from engine.errors import ConcurrencyConflict
from engine.events import Event, ExecutionCreated, ExecutionStarted
from engine.models import WorkflowSpec
from propeller._group_commit import GroupCommit as _GroupCommit

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = WorkflowSpec(name="w", inputs=[], outputs=[], nodes=[], output_bindings={})


def created(eid: str) -> ExecutionCreated:
    return ExecutionCreated(
        execution_id=eid, version=1, at=NOW, project="p", domain="d", workflow="w", workflow_version="v",
        spec=SPEC, inputs={},
    )  # fmt: skip


class CountingStore(SqliteEventStore):
    """The real SQLite store, counting transactions and holding the first one open a moment."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.transactions: list[int] = []

    async def append(self, execution_id: str, expected_version: int, events: Sequence[Event]) -> int:
        self.transactions.append(1)
        await asyncio.sleep(0.05)  # a slow commit: others pile up behind it
        return await super().append(execution_id, expected_version, events)

    async def append_many(self, batches: Sequence[tuple[str, int, Sequence[Event]]]) -> list[int]:
        self.transactions.append(len(batches))
        return await super().append_many(batches)


async def test_concurrent_rounds_share_a_transaction(tmp_path: Path) -> None:
    async with CountingStore(tmp_path / "events.db") as store:
        commit = _GroupCommit(store)
        ids = [f"e{i}" for i in range(20)]
        await asyncio.gather(*(commit.append(eid, 0, [created(eid)]) for eid in ids))
        assert sum(store.transactions) == 20
        assert len(store.transactions) < 20  # batched: fewer transactions than rounds
        assert max(store.transactions) > 1
        for eid in ids:
            assert await store.current_version(eid) == 1


async def test_a_conflict_in_a_batch_fails_only_the_loser(tmp_path: Path) -> None:
    async with CountingStore(tmp_path / "events.db") as store:
        await store.append("taken", 0, [created("taken")])
        commit = _GroupCommit(store)
        first = asyncio.create_task(commit.append("a", 0, [created("a")]))  # holds the writer
        await asyncio.sleep(0.01)
        late = [
            asyncio.create_task(commit.append("b", 0, [created("b")])),
            asyncio.create_task(commit.append("taken", 0, [created("taken")])),  # stale expected version
            asyncio.create_task(
                commit.append("c", 0, [created("c"), ExecutionStarted(execution_id="c", version=2, at=NOW)])
            ),
        ]
        await first
        results = await asyncio.gather(*late, return_exceptions=True)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], ConcurrencyConflict)
        assert await store.current_version("b") == 1 and await store.current_version("c") == 2


async def test_a_round_cancelled_in_a_batch_leaves_the_others_answered(tmp_path: Path) -> None:
    """A round cancelled while its append waits in a batch (at shutdown) gives up its own answer
    only: the rounds sharing the batch still get theirs."""
    async with CountingStore(tmp_path / "events.db") as store:
        commit = _GroupCommit(store)
        first = asyncio.create_task(commit.append("first", 0, [created("first")]))  # the slow write
        await asyncio.sleep(0.01)
        rounds = [asyncio.create_task(commit.append(eid, 0, [created(eid)])) for eid in ("a", "b", "c")]
        await asyncio.sleep(0.01)
        rounds[0].cancel()
        await asyncio.wait_for(asyncio.gather(first, *rounds[1:]), 5)
        for eid in ("first", "b", "c"):
            assert await store.current_version(eid) == 1
