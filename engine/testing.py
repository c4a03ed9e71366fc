"""Test doubles for the engine's interfaces: an in-memory event store and a scriptable executor.

- `InMemoryEventStore` is a complete `EventStore` backend held in memory. It passes the same
  contract suite as the SQLite and Postgres stores (``tests/engine/test_store_contract.py``), so
  planner and controller unit tests can use it in their place. Several store objects built on one
  `InMemoryLog` behave like several processes on one database: they see each other's appends,
  wake each other's ``wait_for_changes`` and exclude each other from an execution's lease.
- `FakeExecutor` is an `Executor` that runs no code. It records every call the loop makes, and the
  test decides what each attempt does (`FakeExecutor.start_attempt`, `FakeExecutor.succeed`,
  `FakeExecutor.fail`, `FakeExecutor.lose`), or lets it succeed by itself (``auto_succeed``).

Both are event-loop-only: every user of one `InMemoryLog` or one `FakeExecutor` must run on the
same event loop thread (nothing here takes a thread lock).

This module is part of the floor: it imports nothing of ours but ``engine.errors``,
``engine.models``, ``engine.events``, ``engine.interfaces`` and the stores' shared floor helpers
``engine._projection`` and ``engine._wakeups`` (and the standard library, anyio and msgspec), so
that ``propeller`` tests may use it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import anyio
import anyio.lowlevel
import msgspec

from engine._chain import chain_checksums
from engine._projection import check_reader_cursor, decode_cursor, normalize_statuses, page_of, plan_projection
from engine._wakeups import ChangeSignal
from engine.errors import ConcurrencyConflict
from engine.interfaces import (
    BlobStore,
    EventStore,
    ExecutionPage,
    ExecutionStatus,
    ExecutionSummary,
    Executor,
    StoredEvent,
    TaskKey,
    TaskRequest,
    TaskStatus,
)
from engine.models import ErrorInfo, TaskRef

__all__ = ["FakeAttempt", "FakeExecutor", "InMemoryEventStore", "InMemoryLog"]

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware (UTC)."""

AutoOutcome = Mapping[str, bytes] | Callable[[TaskRequest], Mapping[str, bytes] | TaskStatus]
"""What ``FakeExecutor(auto_succeed=...)`` gives every attempt: fixed outputs, or a function of the
request returning outputs or a whole final `TaskStatus` (to fail, or to return a dynamic spec)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- event store -----------------------------------------------------------------------------------


class InMemoryLog:
    """The "database" behind one or more `InMemoryEventStore` objects: events, projection, leases.

    Build one and hand it to several stores to simulate several processes sharing one database;
    it outlives its stores, so a store can be closed and another opened on the same log (a restart).

    Args:
        clock: the database's clock, for ``updated_at`` (and ``created_at`` of executions whose
            first append carries no ``ExecutionCreated``); UTC wall time by default.
    """

    def __init__(self, *, clock: Clock = _utc_now) -> None:
        self._clock = clock
        self._records: list[StoredEvent] = []  # the global log: record i has seq i + 1
        self._by_execution: dict[str, list[StoredEvent]] = {}  # record j has version j + 1
        self._rows: dict[str, ExecutionSummary] = {}
        self._leases: dict[str, InMemoryEventStore] = {}
        self._cursors: dict[str, int] = {}
        self._listeners: set[InMemoryEventStore] = set()  # started stores, woken on every append

    @property
    def records(self) -> tuple[StoredEvent, ...]:
        """Every stored record in ``seq`` order (record ``i`` has seq ``i + 1``), for inspection."""
        return tuple(self._records)

    def lease_holder(self, execution_id: str) -> InMemoryEventStore | None:
        """The store that holds ``execution_id``'s lease, or ``None``."""
        return self._leases.get(execution_id)

    def _commit(self, batches: Sequence[tuple[str, int, Sequence[StoredEvent]]]) -> None:
        """Write all batches, or raise and write nothing. Never awaits: atomic on the event loop."""
        changes = plan_projection(batches)
        if not changes:
            return
        for change in changes:
            row = self._rows.get(change.execution_id)
            actual = 0 if row is None else row.version
            if actual != change.expected_version:
                raise ConcurrencyConflict(change.execution_id, change.expected_version, actual)
        now = self._clock()
        for execution_id, _, records in batches:
            if records:
                log = self._by_execution.setdefault(execution_id, [])
                previous = log[-1].checksum if log else None
                checksums = chain_checksums(execution_id, previous, records)
                chained = [msgspec.structs.replace(r, checksum=c) for r, c in zip(records, checksums, strict=True)]
                self._records.extend(chained)
                log.extend(chained)
        for change in changes:
            if change.created is not None:
                fields = change.created
                created_at = fields["created_at"]
                self._rows[change.execution_id] = ExecutionSummary(
                    execution_id=change.execution_id,
                    project=str(fields["project"]),
                    domain=str(fields["domain"]),
                    workflow=str(fields["workflow"]),
                    status=change.status or "created",
                    created_at=_as_utc(created_at) if isinstance(created_at, datetime) else now,
                    updated_at=now,
                    version=change.new_version,
                    parent=fields["parent"],  # type: ignore[arg-type]
                )
            else:
                row = self._rows[change.execution_id]
                self._rows[change.execution_id] = msgspec.structs.replace(
                    row, version=change.new_version, status=change.status or row.status, updated_at=now
                )
        for store in list(self._listeners):
            store._wake()


class InMemoryEventStore(EventStore):
    """An `EventStore` in memory, with the semantics of the SQL backends.

    Records are kept encoded (``StoredEvent.payload``), so every read decodes as a real backend
    does. Every operation yields to the event loop once before it acts, as a database round trip
    would, and then acts without awaiting, so appends are atomic and ``read_all`` is commit-safe
    as is. The projection, its filters and list cursors are the SQL backends' own (a cursor from
    one is valid in another). Leases, under execution ids or any other name, last until `release`
    or `close` (closing stands in for a crash); durable reader cursors live in the log.

    Args:
        log: the shared log; a fresh private one when ``None``. Pass one log to several stores
            (or use `sibling`) to simulate several processes on one database.
    """

    name = "memory"

    def __init__(self, log: InMemoryLog | None = None) -> None:
        self._log = log if log is not None else InMemoryLog()
        self._started = False
        self._changes = ChangeSignal()

    @property
    def log(self) -> InMemoryLog:
        """The log this store reads and writes."""
        return self._log

    def sibling(self) -> InMemoryEventStore:
        """A new, unstarted store on the same log: another process on the same database."""
        return InMemoryEventStore(self._log)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start receiving change wake-ups (idempotent)."""
        if self._started:
            return
        self._started = True
        self._log._listeners.add(self)

    async def close(self) -> None:
        """Drop every lease this store holds and stop wake-ups (idempotent); the log keeps everything."""
        for execution_id in [eid for eid, owner in self._log._leases.items() if owner is self]:
            del self._log._leases[execution_id]
        self._log._listeners.discard(self)
        self._started = False

    async def _round_trip(self) -> None:
        if not self._started:
            raise RuntimeError("InMemoryEventStore is not started: `await store.start()` (or `async with`) first")
        # A real store awaits I/O here: yielding lets concurrent callers interleave as they would.
        await anyio.lowlevel.checkpoint()

    def _wake(self) -> None:
        self._changes.notify()

    # --- records ---------------------------------------------------------------------------------

    async def _append_records(self, batches: Sequence[tuple[str, int, Sequence[StoredEvent]]]) -> None:
        await self._round_trip()
        self._log._commit(batches)

    async def _read_records(self, execution_id: str, after: int) -> list[StoredEvent]:
        await self._round_trip()
        records = self._log._by_execution.get(execution_id, [])
        return records[max(after - 1, 0) :]

    async def _read_all_records(self, after_seq: int, limit: int) -> list[tuple[int, str, int, bytes]]:
        await self._round_trip()
        if limit <= 0:
            return []
        start = max(after_seq, 0)
        # Everything in the log is committed (appends never await midway), so no high-water mark.
        records = self._log._records[start : start + limit]
        return [(seq, r.execution_id, r.version, r.payload) for seq, r in enumerate(records, start=start + 1)]

    async def execution_ids(self, after: str = "", limit: int = 1000) -> list[str]:
        """Ids of the executions that have events, in id order, after ``after``."""
        await self._round_trip()
        return sorted(e for e in self._log._by_execution if e > after)[:limit]

    async def quarantine(self, execution_id: str) -> None:
        """Mark the execution ``quarantined`` in the projection (its events are not touched)."""
        await self._round_trip()
        row = self._log._rows.get(execution_id)
        if row is not None:
            self._log._rows[execution_id] = msgspec.structs.replace(
                row, status="quarantined", updated_at=self._log._clock()
            )

    async def replace_summaries(self, summaries: Sequence[ExecutionSummary], remove: Sequence[str] = ()) -> list[str]:
        """Write projection rows as given and delete those of ``remove`` (rebuild-projections),
        skipping the executions whose log moved on; returns their ids."""
        await self._round_trip()
        skipped: list[str] = []
        for execution_id in remove:
            if self._log._by_execution.get(execution_id):
                skipped.append(execution_id)
            else:
                self._log._rows.pop(execution_id, None)
        for summary in summaries:
            if len(self._log._by_execution.get(summary.execution_id, [])) != summary.version:
                skipped.append(summary.execution_id)
            else:
                self._log._rows[summary.execution_id] = summary
        return skipped

    # --- projection ------------------------------------------------------------------------------

    async def current_version(self, execution_id: str) -> int:
        """The execution's latest version (0 if unknown)."""
        await self._round_trip()
        return len(self._log._by_execution.get(execution_id, []))

    async def get_summary(self, execution_id: str) -> ExecutionSummary | None:
        """The projection row of one execution, or ``None`` if unknown."""
        await self._round_trip()
        return self._log._rows.get(execution_id)

    async def list_executions(
        self,
        *,
        project: str | None = None,
        domain: str | None = None,
        status: ExecutionStatus | Sequence[ExecutionStatus] | None = None,
        workflow: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> ExecutionPage:
        """Executions newest first (by creation time, then id), filtered.

        Args:
            project: only this project.
            domain: only this domain.
            status: one status or several.
            workflow: only executions of this workflow name.
            limit: page size (at least 1).
            cursor: ``next_cursor`` of the previous page.

        Returns:
            A page; its ``next_cursor`` is ``None`` on the last page.

        Raises:
            ValueError: bad ``limit``, ``status`` or ``cursor``.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        statuses = normalize_statuses(status)
        after = decode_cursor(cursor) if cursor is not None else None
        await self._round_trip()
        rows = [
            row
            for row in self._log._rows.values()
            if (project is None or row.project == project)
            and (domain is None or row.domain == domain)
            and (workflow is None or row.workflow == workflow)
            and (statuses is None or row.status in statuses)
            and (after is None or (row.created_at, row.execution_id) < after)
        ]
        rows.sort(key=lambda row: (row.created_at, row.execution_id), reverse=True)
        return page_of(rows[: limit + 1], limit)

    # --- change notifications --------------------------------------------------------------------

    async def wait_for_changes(self, timeout: float | None = None, *, executions_only: bool = False) -> None:
        """Return when events were appended through any store on this log since the calling task's
        last return, or after ``timeout`` seconds (``None``: no limit); each task has its own
        wake-ups. ``executions_only`` changes nothing: every append wakes (the interface allows it)."""
        await self._round_trip()
        await self._changes.wait(timeout)
        self._changes.take()

    # --- durable cursors -------------------------------------------------------------------------

    async def read_cursor(self, name: str) -> int:
        """The durable cursor ``name`` (0 if never written)."""
        await self._round_trip()
        return self._log._cursors.get(name, 0)

    async def write_cursor(self, name: str, seq: int) -> None:
        """Move the durable cursor ``name`` forward to ``seq`` (a lower ``seq`` is ignored).

        Raises:
            ValueError: an empty ``name`` or a negative ``seq``.
        """
        check_reader_cursor(name, seq)
        await self._round_trip()
        if seq > self._log._cursors.get(name, 0):
            self._log._cursors[name] = seq

    # --- leases ----------------------------------------------------------------------------------

    async def claim(self, execution_id: str) -> bool:
        """Own ``execution_id`` among the stores on this log; True if this store holds it."""
        await self._round_trip()
        owner = self._log._leases.setdefault(execution_id, self)
        return owner is self

    async def release(self, execution_id: str) -> None:
        """Give up ownership of ``execution_id`` (a no-op if not held, or if the store is closed)."""
        if self._log._leases.get(execution_id) is self:
            del self._log._leases[execution_id]


def _as_utc(at: datetime) -> datetime:
    # Stored times are UTC with microsecond precision, as the SQL backends return them.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


# --- executor --------------------------------------------------------------------------------------


@dataclass(eq=False)
class FakeAttempt:
    """One attempt a `FakeExecutor` holds. Tests read it; the executor's methods change it.

    Attributes:
        request: the request it was submitted with.
        handle: its durable handle.
        phase: ``queued`` until started, ``running``, then ``succeeded`` or ``failed``.
        released: whether the loop called ``release`` for it (the start gate).
    """

    request: TaskRequest
    handle: str
    phase: Literal["queued", "running", "succeeded", "failed"] = "queued"
    worker: str = ""
    gpu_ids: list[str] = field(default_factory=list)
    started_at: datetime | None = None
    outputs: dict[str, bytes] = field(default_factory=dict)
    dynamic_spec: bytes | None = None
    error: ErrorInfo | None = None
    released: bool = False

    @property
    def key(self) -> TaskKey:
        """The attempt's key."""
        return self.request.key

    @property
    def finished(self) -> bool:
        """Whether it reached a final phase."""
        return self.phase in ("succeeded", "failed")

    def status(self) -> TaskStatus:
        """What ``poll`` answers for it."""
        return TaskStatus(
            phase=self.phase,
            outputs=dict(self.outputs),
            dynamic_spec=self.dynamic_spec,
            error=self.error,
            worker=self.worker,
            gpu_ids=list(self.gpu_ids),
            started_at=self.started_at,
            handle=self.handle,
        )


class FakeExecutor(Executor):
    """A scriptable `Executor` for control-loop tests: it runs no code, the test decides outcomes.

    It records every call (`submitted`, `polls`, `cancelled`, `released`, `forgotten`, and the
    `reported` call-backs it made). A submitted attempt waits in phase ``queued`` until the test
    drives it: `start_attempt`, then `succeed` or `fail`, or `lose` (the executor forgets it without
    a call-back; ``poll`` then says ``lost``). Scripted starts and ends call the loop's ``report``
    unless ``reports=False`` (or ``report=False`` on the one call).

    Lookups: ``poll``/``cancel`` with a handle find the attempt by handle (as Ray or an agent
    would after a restart) and treat a handle of another key as unknown; without one, by key.

    What survives `close`:

    - ``durable=False`` (the default, like the local executor): ``close`` cancels what is in
      flight and forgets every attempt; a controller started later polls them as ``lost``.
    - ``durable=True`` (like work on Ray or an external service): ``close`` only drops the
      ``report`` call-back. Every attempt keeps its phase and handle (in-flight ones stay in
      flight, and the test may still finish them while no controller runs), and is found by key
      or handle after the next ``start``. Outcomes reached while closed are not reported: the
      next controller must poll them.

    Handles are ``fake:<n>`` (``n`` counts submissions over the fake's whole life, so handles are
    never reused across close/start) or, with ``handles="key"``, ``fake:<execution>/<node>/<attempt>``.

    Event-loop-only: call it from the loop's thread. ``report`` is called synchronously from the
    scripting methods (and, with ``auto_succeed``, from a later iteration of the loop).

    Attributes:
        submitted: every ``submit`` call's request, duplicates included.
        polls: every ``poll`` call as ``(key, handle)``.
        cancelled: every ``cancel`` call as ``(key, handle)``, failed ones included.
        released: every ``release`` call's key.
        forgotten: every ``forget`` call's key.
        reported: every call this fake made to ``report``.
        fail_next_cancel: raised by the next ``cancel`` (then cleared); the attempt stays as it was.
        fail_next_submit: raised by the next ``submit`` (then cleared); nothing is queued.
        runnable: what `can_run` answers (bool or predicate); may be changed at any time.
        immediate: what `starts_on_submit` answers (bool or predicate); may be changed at any time.

    Args:
        name: the executor's name.
        durable: whether attempts outlive `close` (see above).
        gates_start: the start gate: `succeed`/`fail` refuse an attempt the loop has not released.
        starts_on_submit: what `starts_on_submit` answers, a bool or a predicate on the request;
            an attempt for which it is true is ``running`` as soon as ``submit`` returns.
        can_run: what `can_run` answers, a bool or a predicate on the task (see `runnable`).
        auto_succeed: when given, every new attempt starts and succeeds by itself on a later loop
            iteration, with these outputs (or the outputs or `TaskStatus` a function of the request
            returns), reporting as a real executor would; gated attempts start, then finish after
            ``release``.
        reports: whether scripted starts and ends call ``report`` by default.
        handles: ``"counter"`` or ``"key"``, how handles are made.
        clock: the time `start_attempt` records; UTC wall time by default.
    """

    def __init__(
        self,
        *,
        name: str = "fake",
        durable: bool = False,
        gates_start: bool = False,
        starts_on_submit: bool | Callable[[TaskRequest], bool] = False,
        can_run: bool | Callable[[TaskRef], bool] = True,
        auto_succeed: AutoOutcome | None = None,
        reports: bool = True,
        handles: Literal["counter", "key"] = "counter",
        clock: Clock = _utc_now,
    ) -> None:
        if handles not in ("counter", "key"):
            raise ValueError(f"FakeExecutor(handles={handles!r}): use 'counter' or 'key'")
        self.name = name
        self.durable = durable
        self.gates_start = gates_start
        self.auto_succeed = auto_succeed
        self.reports = reports
        self.runnable: bool | Callable[[TaskRef], bool] = can_run
        self.immediate: bool | Callable[[TaskRequest], bool] = starts_on_submit
        self.submitted: list[TaskRequest] = []
        self.polls: list[tuple[TaskKey, str]] = []
        self.cancelled: list[tuple[TaskKey, str]] = []
        self.released: list[TaskKey] = []
        self.forgotten: list[TaskKey] = []
        self.reported: list[TaskKey] = []
        self.fail_next_cancel: BaseException | None = None
        self.fail_next_submit: BaseException | None = None
        self._handles = handles
        self._clock = clock
        self._counter = itertools.count(1)
        self._by_key: dict[TaskKey, FakeAttempt] = {}
        self._by_handle: dict[str, FakeAttempt] = {}
        self._report: Callable[[TaskKey], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: anyio.Event | None = None

    # --- Executor ----------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether ``start`` was awaited since the last ``close``."""
        return self._report is not None

    async def start(self, report: Callable[[TaskKey], None], *, blobs: BlobStore | None = None) -> None:
        """Remember ``report`` (replacing the previous controller's, after a ``close``)."""
        self._loop = asyncio.get_running_loop()
        self._report = report
        self._touch()

    async def close(self) -> None:
        """Drop ``report``; unless ``durable``, also cancel and forget every attempt."""
        self._report = None
        if not self.durable:
            self._by_key.clear()
            self._by_handle.clear()
        self._touch()

    async def submit(self, request: TaskRequest) -> str:
        """Record the call and queue a new attempt, unless the key is already held; return its handle.

        Raises:
            RuntimeError: ``start`` was not awaited first.
        """
        if self._report is None or self._loop is None:
            raise RuntimeError("FakeExecutor.submit before start(): await executor.start(report) first")
        self.submitted.append(request)
        self._touch()
        if self.fail_next_submit is not None:
            exc, self.fail_next_submit = self.fail_next_submit, None
            raise exc
        existing = self._by_key.get(request.key)
        if existing is not None:
            return existing.handle
        key = request.key
        if self._handles == "key":
            handle = f"fake:{key.execution_id}/{key.node_id}/{key.attempt}"
        else:
            handle = f"fake:{next(self._counter)}"
        attempt = FakeAttempt(request=request, handle=handle)
        if self.starts_on_submit(request):
            attempt.phase, attempt.worker, attempt.started_at = "running", "fake-worker", self._clock()
        self._by_key[key] = attempt
        self._by_handle[handle] = attempt
        if self.auto_succeed is not None:
            # Not now: the caller may still be in the middle of its round.
            self._loop.call_soon(self._auto_step, attempt)
        return handle

    async def poll(self, key: TaskKey, handle: str = "") -> TaskStatus:
        """Record the call; the attempt's status, or phase ``lost`` if this fake does not hold it."""
        self.polls.append((key, handle))
        self._touch()
        attempt = self._find(key, handle)
        return TaskStatus(phase="lost") if attempt is None else attempt.status()

    async def cancel(self, key: TaskKey, handle: str = "") -> None:
        """Record the call, then raise ``fail_next_cancel`` if set, else forget the attempt (no report)."""
        self.cancelled.append((key, handle))
        self._touch()
        if self.fail_next_cancel is not None:
            exc, self.fail_next_cancel = self.fail_next_cancel, None
            raise exc
        attempt = self._find(key, handle)
        if attempt is not None:
            self._drop(attempt)

    def forget(self, key: TaskKey) -> None:
        """Record the call and drop the attempt if finished; one in flight is left alone."""
        self.forgotten.append(key)
        self._touch()
        attempt = self._by_key.get(key)
        if attempt is not None and attempt.finished:
            self._drop(attempt)

    def release(self, key: TaskKey) -> None:
        """Record the call and open the attempt's start gate."""
        self.released.append(key)
        self._touch()
        attempt = self._by_key.get(key)
        if attempt is None:
            return
        attempt.released = True
        if self.auto_succeed is not None and not attempt.finished and self._loop is not None:
            self._loop.call_soon(self._auto_step, attempt)

    def starts_on_submit(self, request: TaskRequest) -> bool:
        """What ``starts_on_submit=`` says for this request."""
        rule = self.immediate
        return rule(request) if callable(rule) else bool(rule)

    def can_run(self, task: TaskRef) -> bool:
        """What `runnable` says for this task."""
        rule = self.runnable
        return rule(task) if callable(rule) else bool(rule)

    # --- scripting ---------------------------------------------------------------------------------

    @property
    def attempts(self) -> dict[TaskKey, FakeAttempt]:
        """The attempts this fake holds, by key (a copy of the index; the attempts are live)."""
        return dict(self._by_key)

    @property
    def in_flight(self) -> list[TaskKey]:
        """Keys of held attempts not yet finished, in submission order."""
        return [key for key, attempt in self._by_key.items() if not attempt.finished]

    def attempt(self, key: TaskKey) -> FakeAttempt:
        """The attempt held for ``key``.

        Raises:
            KeyError: no attempt is held for ``key`` (never submitted, cancelled, forgotten, lost).
        """
        attempt = self._by_key.get(key)
        if attempt is None:
            raise KeyError(
                f"FakeExecutor {self.name!r} holds no attempt {key}: it was never submitted, or was "
                f"cancelled, forgotten, lost or closed; held: {sorted(self._by_key, key=_sort_key)}"
            )
        return attempt

    def start_attempt(
        self,
        key: TaskKey,
        *,
        worker: str = "fake-worker",
        gpu_ids: Sequence[str] = (),
        started_at: datetime | None = None,
        report: bool | None = None,
    ) -> FakeAttempt:
        """Move a queued attempt to ``running`` (or update a running one's worker) and report it.

        Args:
            key: the attempt.
            worker: the worker name ``poll`` will show.
            gpu_ids: the GPU ids ``poll`` will show.
            started_at: the start time; the clock's now by default.
            report: whether to call ``report``; the executor's ``reports`` setting when ``None``.

        Returns:
            The attempt.

        Raises:
            KeyError: no attempt is held for ``key``.
            RuntimeError: the attempt already finished.
        """
        attempt = self._unfinished(key, "start")
        attempt.phase = "running"
        attempt.worker = worker
        attempt.gpu_ids = list(gpu_ids)
        attempt.started_at = started_at or attempt.started_at or self._clock()
        self._announce(attempt, report)
        return attempt

    def succeed(
        self,
        key: TaskKey,
        outputs: Mapping[str, bytes] | None = None,
        *,
        dynamic_spec: bytes | None = None,
        report: bool | None = None,
    ) -> FakeAttempt:
        """Finish the attempt with ``outputs`` (or a dynamic sub-spec) and report it.

        An attempt still queued counts as started now.

        Args:
            key: the attempt.
            outputs: output literals by name.
            dynamic_spec: the encoded sub-spec of a ``dynamic`` request.
            report: whether to call ``report``; the executor's ``reports`` setting when ``None``.

        Returns:
            The attempt.

        Raises:
            KeyError: no attempt is held for ``key``.
            RuntimeError: it already finished, or ``gates_start`` and the loop has not released it.
        """
        attempt = self._unfinished(key, "succeed", gated=True)
        self._finish(attempt, TaskStatus(phase="succeeded", outputs=dict(outputs or {}), dynamic_spec=dynamic_spec))
        self._announce(attempt, report)
        return attempt

    def fail(
        self,
        key: TaskKey,
        error: ErrorInfo | str = "fake failure",
        *,
        kind: Literal["user", "system", "timeout"] = "user",
        retryable: bool = True,
        report: bool | None = None,
    ) -> FakeAttempt:
        """Finish the attempt as failed and report it.

        Args:
            key: the attempt.
            error: the error, or its message (then ``kind`` and ``retryable`` complete it).
            kind: the error kind when ``error`` is a message: ``system`` for a dead worker.
            retryable: whether a message-only error is retryable.
            report: whether to call ``report``; the executor's ``reports`` setting when ``None``.

        Returns:
            The attempt.

        Raises:
            KeyError: no attempt is held for ``key``.
            RuntimeError: it already finished, or ``gates_start`` and the loop has not released it.
        """
        attempt = self._unfinished(key, "fail", gated=True)
        if isinstance(error, str):
            error = ErrorInfo(kind=kind, message=error, retryable=retryable, node_id=key.node_id)
        self._finish(attempt, TaskStatus(phase="failed", error=error))
        self._announce(attempt, report)
        return attempt

    def lose(self, key: TaskKey) -> FakeAttempt:
        """Forget the attempt silently, without a call-back: ``poll`` now says ``lost``.

        Returns:
            The attempt as it was.

        Raises:
            KeyError: no attempt is held for ``key``.
        """
        attempt = self.attempt(key)
        self._drop(attempt)
        self._touch()
        return attempt

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds, checking it after every call to or scripting of this fake.

        Args:
            condition: e.g. ``lambda: len(fake.submitted) == 2``.
            timeout: a guard against hangs, in seconds.

        Raises:
            TimeoutError: it did not hold within ``timeout``.
        """
        with anyio.fail_after(timeout):
            while not condition():
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()

    # --- internals ---------------------------------------------------------------------------------

    def _find(self, key: TaskKey, handle: str) -> FakeAttempt | None:
        if handle:
            attempt = self._by_handle.get(handle)
            return attempt if attempt is not None and attempt.key == key else None
        return self._by_key.get(key)

    def _drop(self, attempt: FakeAttempt) -> None:
        if self._by_key.get(attempt.key) is attempt:
            del self._by_key[attempt.key]
        if self._by_handle.get(attempt.handle) is attempt:
            del self._by_handle[attempt.handle]

    def _unfinished(self, key: TaskKey, action: str, gated: bool = False) -> FakeAttempt:
        attempt = self.attempt(key)
        if attempt.finished:
            raise RuntimeError(f"cannot {action} attempt {key}: it already {attempt.phase}")
        if gated and self.gates_start and not attempt.released:
            raise RuntimeError(
                f"cannot {action} attempt {key}: the executor gates starts and the loop has not called "
                "release(key) for it (it must, once NodeRunning is appended); drive the loop further first"
            )
        return attempt

    def _finish(self, attempt: FakeAttempt, status: TaskStatus) -> None:
        attempt.phase = "succeeded" if status.phase == "succeeded" else "failed"
        attempt.outputs = dict(status.outputs)
        attempt.dynamic_spec = status.dynamic_spec
        attempt.error = status.error
        attempt.worker = attempt.worker or status.worker or "fake-worker"
        attempt.gpu_ids = attempt.gpu_ids or list(status.gpu_ids)
        attempt.started_at = attempt.started_at or status.started_at or self._clock()

    def _announce(self, attempt: FakeAttempt, report: bool | None) -> None:
        self._touch()
        callback = self._report
        if callback is not None and (self.reports if report is None else report):
            self.reported.append(attempt.key)
            callback(attempt.key)

    def _auto_step(self, attempt: FakeAttempt) -> None:
        """One step of ``auto_succeed``: start a gated attempt, or finish a released/ungated one."""
        if self._by_key.get(attempt.key) is not attempt or attempt.finished or self.auto_succeed is None:
            return  # cancelled, lost, closed or scripted meanwhile
        if self.gates_start and not attempt.released:
            if attempt.phase == "queued":
                self.start_attempt(attempt.key)
            return  # `release` schedules the next step
        outcome = self.auto_succeed
        result = outcome(attempt.request) if callable(outcome) else outcome
        status = result if isinstance(result, TaskStatus) else TaskStatus(phase="succeeded", outputs=dict(result))
        if status.phase not in ("succeeded", "failed"):
            raise ValueError(f"auto_succeed returned phase {status.phase!r} for {attempt.key}: return a final one")
        self._finish(attempt, status)
        self._announce(attempt, None)

    def _touch(self) -> None:
        """Wake `wait_until` callers: something about this fake changed."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None


def _sort_key(key: TaskKey) -> tuple[str, str, int]:
    return (key.execution_id, key.node_id, key.attempt)
