"""Checking an event store against itself: each execution's checksum chain, and the executions
projection against the fold of the log (``slipstream executions verify``); rebuilding the
projection from the log (``slipstream admin rebuild-projections``).

Both walk the log, not the projection, so that a projection row that went missing or was added
by hand is found too. They read through `EventStore.read_records` and the chain check of
``engine._chain``, the same one every read makes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import msgspec

from engine._chain import verify_chain
from engine._projection import plan_projection
from engine.errors import CorruptEvent, ExecutionNotFound
from engine.interfaces import EventStore, ExecutionSummary, StoredEvent

__all__ = ["ExecutionCheck", "RebuildReport", "rebuild_projections", "verify_execution", "verify_store"]

_PAGE = 200  # executions per listing, and logs held in memory at once
# projection columns compared with the fold of the log (updated_at is the store's clock: not derived)
_COMPARED = ("project", "domain", "workflow", "status", "version", "created_at", "parent")


class ExecutionCheck(msgspec.Struct, frozen=True):
    """What `verify_execution` found about one execution.

    Attributes:
        execution_id: the execution.
        events: how many events its log holds.
        legacy: how many of them are unchained legacy events (written before checksums existed).
        head: the hex checksum of its newest event ("" when that one is a legacy event): keep it
            elsewhere to notice a rewrite of the whole chain.
        corrupt: the first corruption of its log (``CorruptEvent``'s problem at ``corrupt_version``),
            or "" when the chain holds.
        corrupt_version: the version ``corrupt`` is about (0 if none).
        projection: how the projection row disagrees with the fold of the log, one entry per
            field (empty when they agree).
    """

    execution_id: str
    events: int
    legacy: int = 0
    head: str = ""
    corrupt: str = ""
    corrupt_version: int = 0
    projection: list[str] = []

    @property
    def ok(self) -> bool:
        """Whether the log is intact and the projection agrees with it."""
        return not self.corrupt and not self.projection


class RebuildReport(msgspec.Struct, frozen=True):
    """What `rebuild_projections` did.

    Attributes:
        executions: executions in the log.
        rewritten: ids whose projection row was written (it was missing or disagreed).
        quarantined: ids whose log is corrupt: their row now says ``quarantined``.
        removed: ids of projection rows without any event, deleted.
        skipped: ids whose log moved while the rebuild ran, or whose corrupt log holds no readable
            ``ExecutionCreated`` to make a row from: left as they were.
    """

    executions: int
    rewritten: list[str] = []
    quarantined: list[str] = []
    removed: list[str] = []
    skipped: list[str] = []


def _expected_summary(
    execution_id: str, records: Sequence[StoredEvent], row: ExecutionSummary | None
) -> ExecutionSummary:
    """The projection row the log implies (``updated_at`` kept from the current row)."""
    (change,) = plan_projection([(execution_id, 0, records)])
    fields = change.created or {}
    created_at = fields.get("created_at")
    now = datetime.now(UTC)
    return ExecutionSummary(
        execution_id=execution_id,
        project=str(fields.get("project", "")),
        domain=str(fields.get("domain", "")),
        workflow=str(fields.get("workflow", "")),
        status=change.status or "created",
        created_at=created_at if isinstance(created_at, datetime) else (row.created_at if row else now),
        updated_at=row.updated_at if row is not None else now,
        version=change.new_version,
        parent=fields.get("parent"),  # type: ignore[arg-type]
    )


def _differences(expected: ExecutionSummary, row: ExecutionSummary | None) -> list[str]:
    if row is None:
        return [f"no projection row (the log says {expected.status} at version {expected.version})"]
    return [
        f"{name} is {getattr(row, name)!r} in the projection, {getattr(expected, name)!r} in the log"
        for name in _COMPARED
        if getattr(row, name) != getattr(expected, name)
    ]


async def verify_execution(
    store: EventStore, execution_id: str, *, project: str | None = None, domain: str | None = None
) -> ExecutionCheck:
    """Check one execution's chain and its projection row.

    Args:
        store: the event store.
        execution_id: the execution.
        project, domain: a scope (None: any); an execution outside it is not found.

    Raises:
        ExecutionNotFound: it has neither events nor a projection row, or is outside the scope.
    """
    check, scopes = await _check(store, execution_id)
    if not _in_scope(scopes, project, domain):
        raise ExecutionNotFound(execution_id)
    return check


def _in_scope(scopes: Sequence[tuple[str, str]], project: str | None, domain: str | None) -> bool:
    return any(project in (None, p) and domain in (None, d) for p, d in scopes)


async def _check(store: EventStore, execution_id: str) -> tuple[ExecutionCheck, list[tuple[str, str]]]:
    """`_judged` of one execution, read from the store."""
    return _judged(execution_id, await store.read_records(execution_id), await store.get_summary(execution_id))


async def _page_of_logs(
    store: EventStore, page: Sequence[str]
) -> tuple[list[Sequence[StoredEvent]], dict[str, ExecutionSummary]]:
    """The logs and projection rows of a page of executions: the rows in one query, the logs read
    together (a store that sends concurrent reads in one query does), not two queries each."""
    rows = await store.get_summaries(page)
    logs = await asyncio.gather(*(store.read_records(execution_id) for execution_id in page))
    return logs, rows


def _judged(
    execution_id: str, records: Sequence[StoredEvent], row: ExecutionSummary | None
) -> tuple[ExecutionCheck, list[tuple[str, str]]]:
    """The check of one execution, and the (project, domain) pairs it belongs to: its log's (when
    the chain holds) and its projection row's, so that a row moved out of a scope is still seen
    from it. A corrupt log without a row belongs to no scope (nothing trustworthy names one).

    Raises:
        ExecutionNotFound: it has neither events nor a projection row.
    """
    scopes = [] if row is None else [(row.project, row.domain)]
    if not records:
        if row is None:
            raise ExecutionNotFound(execution_id)
        return ExecutionCheck(execution_id, 0, projection=["a projection row, but no events in the log"]), scopes
    legacy = sum(1 for r in records if r.checksum is None)
    head = records[-1].checksum.hex() if records[-1].checksum is not None else ""
    try:
        verify_chain(execution_id, records)
    except CorruptEvent as exc:  # the fold of a corrupt log means nothing: only a missing row is worth saying
        projection = ["no projection row"] if row is None else []
        check = ExecutionCheck(execution_id, len(records), legacy, head, exc.problem, exc.version, projection)
        return check, scopes
    expected = _expected_summary(execution_id, records, row)
    check = ExecutionCheck(execution_id, len(records), legacy, head, projection=_differences(expected, row))
    return check, [(expected.project, expected.domain), *scopes]


async def _log_ids(store: EventStore) -> AsyncIterator[list[str]]:
    after = ""
    while True:
        page = await store.execution_ids(after, _PAGE)
        if not page:
            return
        yield page
        after = page[-1]


async def _orphan_rows(
    store: EventStore, in_log: set[str], project: str | None = None, domain: str | None = None
) -> list[str]:
    """Projection rows (of the scope, when given) of executions that have no events."""
    orphans: list[str] = []
    cursor = None
    while True:
        page = await store.list_executions(project=project, domain=domain, limit=_PAGE, cursor=cursor)
        orphans.extend(s.execution_id for s in page.items if s.execution_id not in in_log)
        cursor = page.next_cursor
        if cursor is None:
            return orphans


async def verify_store(
    store: EventStore, *, project: str | None = None, domain: str | None = None
) -> AsyncIterator[ExecutionCheck]:
    """`verify_execution` of every execution in the log, in id order, then a check for each
    projection row that has no events.

    With ``project``/``domain``, only the executions of that scope: those whose log or projection
    row says they belong to it (a corrupt log without a row names no scope: verify without one).
    """
    seen: set[str] = set()
    async for page in _log_ids(store):
        logs, rows = await _page_of_logs(store, page)
        for execution_id, records in zip(page, logs, strict=True):
            seen.add(execution_id)
            check, scopes = _judged(execution_id, records, rows.get(execution_id))  # events: never gone
            if _in_scope(scopes, project, domain):
                yield check
    for execution_id in await _orphan_rows(store, seen, project, domain):
        yield ExecutionCheck(execution_id, 0, projection=["a projection row, but no events in the log"])


async def rebuild_projections(store: EventStore) -> RebuildReport:
    """Make every projection row the fold of its execution's log: rows that disagree or are
    missing are written, rows without events deleted, executions with a corrupt log marked
    ``quarantined``. Safe while control loops run (see `EventStore.replace_summaries`)."""
    seen: set[str] = set()
    rewritten: list[str] = []
    quarantined: list[str] = []
    skipped: list[str] = []
    async for page in _log_ids(store):
        writes: list[ExecutionSummary] = []
        logs, rows = await _page_of_logs(store, page)
        for execution_id, records in zip(page, logs, strict=True):
            seen.add(execution_id)
            row = rows.get(execution_id)
            try:
                verify_chain(execution_id, records)
            except CorruptEvent:
                if row is not None:
                    if row.status != "quarantined":
                        await store.quarantine(execution_id)
                        quarantined.append(execution_id)
                else:  # no row to mark, and no trustworthy log to make one from
                    skipped.append(execution_id)
                continue
            expected = _expected_summary(execution_id, records, row)
            if _differences(expected, row):
                writes.append(expected)
        if writes:
            moved = await store.replace_summaries(writes)
            skipped.extend(moved)
            rewritten.extend(s.execution_id for s in writes if s.execution_id not in moved)
    orphans = await _orphan_rows(store, seen)
    moved = await store.replace_summaries([], orphans) if orphans else []
    skipped.extend(moved)
    removed = [e for e in orphans if e not in moved]
    return RebuildReport(len(seen), rewritten, quarantined, removed, skipped)
