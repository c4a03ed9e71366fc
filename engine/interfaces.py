"""The interfaces the control loop is written against: event store, executor, service, blob store.

`propeller` reaches storage and executors only through these; `Engine` fills them with concrete
backends found by entry point (DESIGN section 8).
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import anyio
import msgspec

from engine._chain import verify_chain
from engine.errors import ConfigError, CorruptBlob, CorruptEvent, InvalidBlobAddress
from engine.events import (
    TERMINAL_EXECUTION_KINDS,
    AnyEvent,
    ElementResult,
    Event,
    ExecutionCreated,
    decode_event,
    encode_event,
)
from engine.models import ErrorInfo, Resources, TaskRef

__all__ = [
    "BLOB_URL_PREFIX",
    "DEFAULT_BLOB_CHUNK_SIZE",
    "TERMINAL_STATUSES",
    "Agent",
    "AgentJob",
    "AgentJobStatus",
    "BlobStore",
    "EventStore",
    "ExecutionPage",
    "ExecutionSummary",
    "Executor",
    "GlobalEvent",
    "Lineage",
    "LineageEdge",
    "LineageLink",
    "Reservation",
    "Service",
    "ServiceContext",
    "ServiceHealth",
    "StoredEvent",
    "TaskKey",
    "TaskRequest",
    "TaskStatus",
    "blob_address",
    "blob_url",
    "parse_blob_address",
    "status_after",
]

# ``quarantined``: the control loop found the execution's log corrupt (`CorruptEvent`) and stopped
# running it; only the projection says so (the log cannot be appended to until it is repaired)
ExecutionStatus = Literal["created", "running", "succeeded", "failed", "aborted", "quarantined"]
# The statuses an execution never leaves: the one definition, for every module that asks "is it over?".
TERMINAL_STATUSES: frozenset[ExecutionStatus] = frozenset({"succeeded", "failed", "aborted"})


# --- event store -----------------------------------------------------------------------------------


class StoredEvent(msgspec.Struct, frozen=True):
    """What a backend stores: a dumb record. ``payload`` is ``encode_event(event)``; ``checksum``
    chains it to the execution's previous event (`engine._chain`), set by the store as it writes
    (``None`` in records on their way to a store, and in events stored before the chain existed)."""

    execution_id: str
    version: int
    kind: str
    node_id: str
    attempt: int
    payload: bytes
    checksum: bytes | None = None


class GlobalEvent(msgspec.Struct, frozen=True):
    """An event read from the whole log, with its global position ``seq`` (for relays)."""

    seq: int
    event: AnyEvent


class ExecutionSummary(msgspec.Struct, frozen=True):
    """A row of the executions projection, kept in the same transaction as the events."""

    execution_id: str
    project: str
    domain: str
    workflow: str
    status: ExecutionStatus
    created_at: datetime
    updated_at: datetime
    version: int
    parent: str | None = None


class ExecutionPage(msgspec.Struct, frozen=True):
    """One page of `EventStore.list_executions`; pass ``next_cursor`` back to get the next page."""

    items: list[ExecutionSummary]
    next_cursor: str | None = None


def status_after(kind: str, current: ExecutionStatus) -> ExecutionStatus:
    """The projection's execution status after an event of ``kind`` (pure)."""
    if kind == "ExecutionCreated":
        return "created"
    if kind == "ExecutionStarted":
        return "running"
    if kind in TERMINAL_EXECUTION_KINDS:
        return {"ExecutionSucceeded": "succeeded", "ExecutionFailed": "failed"}.get(kind, "aborted")  # type: ignore[return-value]
    return current


class EventStore(abc.ABC):
    """The append-only log of every execution.

    Contract:
    - ``append`` writes events with versions ``expected_version + 1 ...`` atomically, or nothing.
      If the execution's current version is not ``expected_version`` it raises
      ``ConcurrencyConflict`` and writes nothing. Each event's ``version`` field must already equal
      its position (``expected_version + 1 + i``); a mismatch is a ``ValueError`` (caller bug).
    - ``append_many`` is ``append`` for several executions in one transaction: all or nothing.
    - ``read`` returns an execution's events in version order (``after`` excludes versions <= it);
      an unknown execution gives ``[]``. Each event's checksum chain and payload are checked: a
      missing version, a checksum that does not chain, or a payload that does not decode raises
      ``CorruptEvent`` naming the execution and version. ``read_all`` raises it, with the
      event's ``seq``, for a payload that does not decode (after returning the events before it;
      the chain is checked per execution, by ``read``).
    - ``read_all`` returns events of all executions in commit-safe ``seq`` order: it never returns
      an event while an event with a lower ``seq`` may still commit.
    - ``wait_for_changes`` returns when something was appended (by any process sharing the store),
      or after ``timeout`` seconds; spurious wake-ups are allowed. With ``executions_only`` it
      must return for an execution created or a status changed, and may sleep through other
      appends. Wake-ups are per consumer (the calling asyncio task): every task waiting on, or
      busy between waits on, one store instance is woken for each append it has not yet been
      woken for; one never swallows another's. So wait in the consumer's own task
      (``anyio.move_on_after``, not a fresh task per call: on Python 3.11 ``asyncio.wait_for``
      makes one); fresh tasks share one position among them.
    - ``read_cursor``/``write_cursor`` keep durable cursors of tailing readers (a relay, a durable
      subscription): a tracking record per ``name`` holding the ``seq`` of ``read_all`` up to
      which the reader is done. ``read_cursor`` of a name never written is 0; ``write_cursor``
      never moves a cursor backwards (a lower ``seq`` is ignored), so two writers racing leave the
      higher one. Cursors share nothing with execution ids.
    - ``claim``/``release`` give one control loop at a time the right to submit an execution's
      attempts; appends stay guarded by optimistic concurrency whoever holds it. The same leases
      serve any singleton of a deployment under a reserved name that no execution id takes (the
      event-stream relay claims ``"relay:<stream>"``): the holder is one store instance among all
      processes sharing the store, and the lease dies with its process (SQLite: an ``flock``;
      Postgres: a session advisory lock; in memory: until ``close``). Names hash into lock slots,
      so two names may share one (then one holder owns both, never two holders one), and Postgres
      drops every lease when the store's lease session is lost: a singleton calls ``claim`` again
      before each unit of work (cheap while held) and stops when it returns False.
    - ``start`` must be awaited before use and ``close`` after; both are idempotent.
    Backends implement the ``_``-prefixed record methods; this base class maps events to records.
    """

    name: str = ""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections and apply migrations."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def __aenter__(self) -> EventStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def append(self, execution_id: str, expected_version: int, events: Sequence[Event]) -> int:
        """Append ``events`` after ``expected_version``; return the new version."""
        records = to_records(execution_id, expected_version, events)
        await self._append_records([(execution_id, expected_version, records)])
        return expected_version + len(records)

    async def append_many(self, batches: Sequence[tuple[str, int, Sequence[Event]]]) -> list[int]:
        """Append several executions' events in one transaction; return each new version."""
        prepared = [(eid, expected, to_records(eid, expected, evs)) for eid, expected, evs in batches]
        await self._append_records(prepared)
        return [expected + len(records) for _, expected, records in prepared]

    async def read(self, execution_id: str, after: int = 0) -> list[AnyEvent]:
        """The execution's events with version > ``after``, in version order.

        Raises:
            CorruptEvent: the stored log was changed: a version is missing, a checksum does not
                chain, or a payload does not decode.
        """
        records = await self._read_records(execution_id, after)
        events = verify_chain(execution_id, records, after)
        if records:
            self._note_head(execution_id, records[-1])
        return events

    async def read_all(self, after_seq: int = 0, limit: int = 1000) -> list[GlobalEvent]:
        """Events of all executions with ``seq`` > ``after_seq``, in ``seq`` order, commit-safe;
        the page stops before an event whose payload does not decode.

        Raises:
            CorruptEvent: the first event after ``after_seq`` does not decode to the event its row
                describes; its ``seq`` says where it is, for a tailing reader to move past it.
        """
        out: list[GlobalEvent] = []
        for seq, execution_id, version, payload in await self._read_all_records(after_seq, limit):
            try:
                out.append(GlobalEvent(seq, decode_event(payload)))
            except msgspec.DecodeError as exc:  # ValidationError too: a kind unknown here
                if out:  # the events before it first: the next read starts at it, and raises
                    return out
                raise CorruptEvent(execution_id, version, f"its payload does not decode ({exc})", seq=seq) from None
        return out

    async def read_records(self, execution_id: str) -> list[StoredEvent]:
        """The execution's stored records as they are, checksums included, unchecked (for
        ``slipstream executions verify``; everything else reads through `read`)."""
        return await self._read_records(execution_id, 0)

    def _note_head(self, execution_id: str, last: StoredEvent) -> None:  # noqa: B027 - optional hook
        """A read saw ``last`` as the execution's newest record (a backend may cache its checksum,
        which the next append chains from)."""

    async def execution_ids(self, after: str = "", limit: int = 1000) -> list[str]:
        """Ids of the executions that have events, in id order, after ``after`` (a page of the
        log, not of the projection: verify and rebuild-projections walk it)."""
        raise ConfigError(f"event store {self.name or type(self).__name__!r} cannot list the ids in its log")

    async def quarantine(self, execution_id: str) -> None:
        """Mark the execution ``quarantined`` in the projection (its log is corrupt: loops leave
        it alone, and ``executions list`` shows it). Its events are not touched."""
        raise ConfigError(f"event store {self.name or type(self).__name__!r} cannot quarantine executions")

    async def replace_summaries(self, summaries: Sequence[ExecutionSummary], remove: Sequence[str] = ()) -> list[str]:
        """Write projection rows as given (insert or overwrite) and delete the rows of ``remove``,
        in one transaction: what ``slipstream admin rebuild-projections`` does after folding the log.

        A row is written only if its ``version`` is still the newest in the log (and a row is
        removed only if the execution has no events), checked under the lock appends take: a
        rebuild racing a running loop never moves a projection back.

        Returns:
            The ids left alone because their log moved meanwhile (fold and write them again).
        """
        raise ConfigError(f"event store {self.name or type(self).__name__!r} cannot rebuild its projection")

    @abc.abstractmethod
    async def _append_records(self, batches: Sequence[tuple[str, int, Sequence[StoredEvent]]]) -> None:
        """Write all batches in one transaction, or raise ``ConcurrencyConflict`` and write nothing."""

    @abc.abstractmethod
    async def _read_records(self, execution_id: str, after: int) -> list[StoredEvent]:
        """The execution's stored records with version >= ``after``, in version order, checksums
        included: the one at ``after`` (when ``after`` > 0) is what the next one chains from."""

    @abc.abstractmethod
    async def _read_all_records(self, after_seq: int, limit: int) -> list[tuple[int, str, int, bytes]]:
        """``(seq, execution_id, version, payload)`` of committed events with seq > ``after_seq``,
        commit-safe, in order."""

    @abc.abstractmethod
    async def current_version(self, execution_id: str) -> int:
        """The execution's latest version (0 if unknown)."""

    @abc.abstractmethod
    async def get_summary(self, execution_id: str) -> ExecutionSummary | None:
        """The projection row of one execution, or ``None``."""

    async def get_summaries(self, execution_ids: Sequence[str]) -> dict[str, ExecutionSummary]:
        """The projection rows of several executions, by id (unknown ones left out); a backend
        where a query is a round trip answers in one (``executions verify`` walks the store)."""
        rows = {}
        for execution_id in execution_ids:
            row = await self.get_summary(execution_id)
            if row is not None:
                rows[execution_id] = row
        return rows

    @abc.abstractmethod
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
        """Executions newest first, filtered; ``cursor`` continues a previous page."""

    @abc.abstractmethod
    async def wait_for_changes(self, timeout: float | None = None, *, executions_only: bool = False) -> None:
        """Return when events were appended (by anyone), or after ``timeout`` seconds.

        ``executions_only``: the caller needs to hear only of executions created or whose status
        changed (a control loop looking for work); a store that cannot tell them apart wakes it
        for every append (a spurious wake-up).
        """

    @abc.abstractmethod
    async def read_cursor(self, name: str) -> int:
        """The durable cursor ``name``: the ``seq`` its reader is done with (0 if never written).

        Raises:
            StoreUnavailable: the store cannot be reached.
        """

    @abc.abstractmethod
    async def write_cursor(self, name: str, seq: int) -> None:
        """Move the durable cursor ``name`` forward to ``seq``; a ``seq`` below the stored one is ignored.

        Raises:
            ValueError: an empty ``name`` or a negative ``seq`` (caller bug).
            StoreUnavailable: the store cannot be reached (the write may be retried: it is idempotent).
        """

    @abc.abstractmethod
    async def claim(self, execution_id: str) -> bool:
        """Try to become the one control loop that runs ``execution_id``; True if this store holds it.

        Ownership is a lease that lasts until `release`, `close`, or the death of this process (or
        of its database session): a crashed owner never blocks an execution for long. Calling it
        again while holding the lease is cheap and returns True. Two store instances never hold
        the same execution at once, in one process or in several. Any other name works the same
        way (a singleton's lease, such as ``"relay:SLIPSTREAM"``; see the class docstring).
        """

    @abc.abstractmethod
    async def release(self, execution_id: str) -> None:
        """Give up ownership of ``execution_id`` (a no-op if not held)."""

    def prefers(self, execution_id: str, project: str | None = None, domain: str | None = None) -> bool:
        """Whether this store instance should be first to claim ``execution_id`` among the control
        loops sharing the store that run its ``project`` and ``domain`` (when given), so that they
        share new executions fairly instead of the quickest taking all (the others claim it after
        a short delay, should the preferred one not). A backend that knows no other loops prefers
        everything."""
        return True

    async def announce_loop(self, project: str | None = None, domain: str | None = None) -> None:  # noqa: B027
        """Count this store instance among the control loops sharing the store (a serving loop
        calls it once at start; `serving_loops` of every instance then counts it); ``project``,
        ``domain``: the loop runs only that scope's executions. A no-op for a backend that cannot
        count them."""

    async def serving_loops(self, project: str | None = None, domain: str | None = None) -> int | None:
        """How many control loops sharing the store announced themselves and are alive (with
        ``project`` and ``domain``: of those, the ones that run that scope's executions), or
        ``None`` if the backend cannot tell (a client then runs its executions itself)."""
        return None

    def changed_by_others(self) -> set[str] | None:
        """The executions that other processes appended to since the previous call (forgotten as
        they are returned), or ``None`` when the backend cannot tell (then any may have been). A
        control loop reads the log's tail of an execution it caches only if it is among them, so
        the first call, and any after the backend may have missed an append, return ``None``.
        A backend may name only those created or whose status changed (an abort): a loop's next
        append to one it missed is a ``ConcurrencyConflict`` and a fresh read, as for any stale
        cache."""
        return None

    def lease_epoch(self) -> int:
        """A number that moves on when leases held by another process may have been freed (that
        process died or lost its session): loops then look for executions nobody holds at once,
        rather than at their next resync. Constant (0) for a backend that cannot tell."""
        return 0


def to_records(execution_id: str, expected_version: int, events: Sequence[Event]) -> list[StoredEvent]:
    """Map events to stored records, checking they carry consecutive versions for this execution."""
    records: list[StoredEvent] = []
    for offset, event in enumerate(events, start=1):
        if event.execution_id != execution_id or event.version != expected_version + offset:
            raise ValueError(
                f"event {type(event).__name__} for {event.execution_id!r} v{event.version} does not follow "
                f"{execution_id!r} v{expected_version + offset - 1}: number events consecutively"
            )
        records.append(
            StoredEvent(
                execution_id=execution_id,
                version=event.version,
                kind=type(event).__name__,
                node_id=event.node_id,
                attempt=event.attempt,
                payload=encode_event(event),
            )
        )
    return records


def summary_fields(record: StoredEvent, event: Event | None = None) -> dict[str, object] | None:
    """Projection fields an ``ExecutionCreated`` record sets (None for other kinds)."""
    if record.kind != "ExecutionCreated":
        return None
    created = event if isinstance(event, ExecutionCreated) else decode_event(record.payload)
    assert isinstance(created, ExecutionCreated)
    return {
        "project": created.project,
        "domain": created.domain,
        "workflow": created.workflow,
        "created_at": created.at,
        "parent": created.parent,
    }


# --- executors -------------------------------------------------------------------------------------


class TaskKey(msgspec.Struct, frozen=True, array_like=True):
    """Identifies one attempt; submission is idempotent per key."""

    execution_id: str
    node_id: str
    attempt: int


class TaskRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """Everything an executor needs to run one attempt.

    ``kind`` is ``task`` (run the function, return output literals) or ``dynamic`` (run the
    ``@dynamic`` function in compile mode, return the encoded sub-spec in ``TaskStatus.dynamic_spec``).

    A chunk request (``elements`` not empty) runs the task once per map element: element
    ``elements[i]`` (its attempt ``element_attempts[i]``) gets ``inputs`` (the broadcast ones) plus
    ``mapped[name][i]`` for each mapped input, and runs as node ``<map>/<index>``. The executor runs
    it as one job (``engine.runtime.run_attempt`` does the loop, or the gather for async tasks) and
    reports one `ElementResult` per element in ``TaskStatus.elements``; the chunk's own phase is
    ``succeeded`` when every element has a result, whatever those results are.
    """

    key: TaskKey
    task: TaskRef
    inputs: dict[str, bytes]
    kind: Literal["task", "dynamic"] = "task"
    resources: Resources = Resources()
    timeout: float | None = None
    project: str = "default"
    domain: str = "development"
    secrets: tuple[str, ...] = ()
    elements: list[int] = []
    element_attempts: list[int] = []
    mapped: dict[str, list[bytes]] = {}
    # a directory where the runtime mirrors what the attempt prints while it runs, for readers in
    # other processes (`engine._capture.live_log_path`); "" for none
    live_logs: str = ""


class TaskStatus(msgspec.Struct, frozen=True, omit_defaults=True):
    """What an executor knows about an attempt.

    ``phase`` ``queued`` or ``running`` while in flight; ``succeeded`` with ``outputs`` (or
    ``dynamic_spec``); ``failed`` with ``error``; ``lost`` if the executor has no record of the
    attempt (it never got it, or forgot it in a restart): the loop records a system failure.
    ``handle`` is the executor's durable id of the attempt (a Ray actor and task id, an agent's job
    id); the loop records it in ``NodeRunning`` so that a restarted loop can poll or cancel it.
    """

    phase: Literal["queued", "running", "succeeded", "failed", "lost"]
    outputs: dict[str, bytes] = {}
    dynamic_spec: bytes | None = None
    error: ErrorInfo | None = None
    worker: str = ""
    gpu_ids: list[str] = []
    started_at: datetime | None = None
    handle: str = ""
    elements: list[ElementResult] = []  # a chunk's per-element results
    # what the attempt printed and logged (bounded: engine._capture.LOG_LIMIT); the loop stores it
    # in the blob store and records the address in the attempt's final event
    logs: str = ""


class Executor(abc.ABC):
    """Runs task attempts. Every backend passes ``tests/contract/test_executor_contract.py``.

    Contract:
    - ``start(report)`` is awaited once before use. ``report(key)`` is called (from the event-loop
      thread or any other thread; it must be cheap and thread-safe) when an attempt starts and when
      it reaches a final phase, so that the loop polls it and records ``NodeRunning`` (the attempt's
      timeout counts from its real start) and its end. Attempts for which ``starts_on_submit`` is
      True need no start report: the round that submits them records their start.
    - ``submit`` is idempotent per ``request.key``: submitting a key that is in flight or finished
      does not start it again. It returns the attempt's durable handle (``""`` if it has none).
    - ``poll(key, handle)`` never raises for an unknown attempt: it returns phase ``lost``. After a
      restart the loop polls with the handle recorded in ``NodeRunning``; an executor whose work
      outlives the engine (Ray, agents) finds the attempt by it.
    - ``cancel(key, handle)`` stops the attempt if it runs (an async task is cancelled, a process is
      terminated) and forgets it; unknown attempts are ignored. If it raises, the loop keeps the
      attempt tracked and cancels it again at the next round.
    - ``forget`` drops a finished attempt's result once the loop has recorded it.
    - Start gate: an executor whose workers share the engine's process (``gates_start``) must not
      run an attempt's body before ``release(key)``. The loop calls it once the attempt's start is
      durable (``NodeRunning`` appended), so that an attempt that kills the process is found on
      restart as a started attempt (a system failure, counted against the system-retry budget)
      instead of being submitted again forever.
    - ``starts_on_submit(request)`` is a pure predicate: True when the attempt's body starts as
      soon as ``submit`` returns (no queue in between). The planner then records ``NodeRunning``
      in the round that submits, saving a round per attempt.
    """

    name: str = ""
    gates_start: bool = False

    @abc.abstractmethod
    async def start(self, report: Callable[[TaskKey], None], *, blobs: BlobStore | None = None) -> None:
        """Start worker pools; remember ``report`` to announce starts and ends of attempts, and
        ``blobs``, where the values referenced from inputs live (`engine.runtime.resolve_request`
        reads them before a body runs; outputs above the inline limit may be offloaded there, and
        the loop offloads any it still gets)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Cancel everything in flight and release workers."""

    @abc.abstractmethod
    async def submit(self, request: TaskRequest) -> str:
        """Start the attempt, unless this key was already submitted; return its durable handle."""

    @abc.abstractmethod
    async def poll(self, key: TaskKey, handle: str = "") -> TaskStatus:
        """The attempt's current status; ``lost`` for unknown attempts."""

    @abc.abstractmethod
    async def cancel(self, key: TaskKey, handle: str = "") -> None:
        """Stop the attempt if running and forget it."""

    @abc.abstractmethod
    def forget(self, key: TaskKey) -> None:
        """Drop a finished attempt's result."""

    def release(self, key: TaskKey) -> None:  # noqa: B027 - optional hook
        """The attempt's start is durable: let its body run (see the start gate above)."""

    def starts_on_submit(self, request: TaskRequest) -> bool:
        """Whether the attempt's body starts as soon as ``submit`` returns (pure; no I/O)."""
        return False

    def can_run(self, task: TaskRef) -> bool:
        """Whether this executor, in this process, can load ``task`` (checked before taking over an
        execution another process started: one whose code is not here is left to others)."""
        return True


# --- agents --------------------------------------------------------------------------------------


class AgentJob(msgspec.Struct, frozen=True, kw_only=True):
    """What an `Agent` is asked to create: one attempt of a task declared to run on it.

    Attributes:
        key: the attempt; ``create`` is idempotent per key.
        task: the task's name (for messages and job names).
        config: the agent's settings declared on the task (``@agent("shell", command=...)``).
        inputs: the attempt's inputs as Python values, by input name.
        secrets: the task's declared secrets, by name (for the job's environment).
        timeout: the task's timeout in seconds; the control loop enforces it by calling ``delete``.
        project, domain: where the execution runs.
    """

    key: TaskKey
    task: str
    config: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    timeout: float | None = None
    project: str = "default"
    domain: str = "development"


class AgentJobStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What an `Agent` knows about a job.

    ``phase`` is ``running`` while the job runs (queued on the other side included); ``succeeded``
    with ``value``, the task's return value (checked against the task's declared outputs);
    ``failed`` with a ``message`` and whether another attempt could help (``retryable``; a
    non-retryable failure ends the node whatever its ``retries``); ``lost`` when the agent has no
    record of the job (it was deleted, or vanished on the other side): a system failure, retried.
    """

    phase: Literal["running", "succeeded", "failed", "lost"]
    value: Any = None
    message: str = ""
    retryable: bool = True


class Agent(abc.ABC):
    """Runs jobs somewhere else (a long query, a deployment, a sensor) for tasks declared to run on
    it. The ``agents`` executor creates one job per attempt and polls it, without holding a worker.
    Every agent is found by name in the entry-point group ``slipstream.agents`` and passes
    ``tests/contract/test_agent_contract.py``.

    Contract:
    - ``create(job)`` starts the job and returns its durable id. It is idempotent per ``job.key``:
      creating a key again returns the same id and starts nothing (a crash between ``create`` and
      the recorded handle must not start a second job).
    - Job ids outlive the engine: ``get`` and ``delete`` of another instance of the agent (a
      restarted engine) find the job by its id; the executor records the id in ``NodeRunning``.
    - ``get(job_id)`` never raises for an unknown job: it returns phase ``lost``. It is called every
      ``poll_interval`` seconds while the job runs, so it is cheap and does not block the loop.
    - ``delete(job_id)`` stops the job if it runs and removes it (its id becomes unknown); unknown
      ids are ignored. The loop calls it on abort, timeout, and for attempts it no longer wants.
    - ``start`` is awaited before use and ``close`` at shutdown; ``close`` leaves jobs running
      (a restarted engine resumes polling them).
    """

    name: str = ""
    poll_interval: float = 1.0

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect to whatever runs the jobs."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; jobs keep running."""

    @abc.abstractmethod
    async def create(self, job: AgentJob) -> str:
        """Start ``job`` unless its key was created before; return its durable id."""

    @abc.abstractmethod
    async def get(self, job_id: str) -> AgentJobStatus:
        """The job's status; ``lost`` for an unknown id."""

    @abc.abstractmethod
    async def delete(self, job_id: str) -> None:
        """Stop the job if it runs and forget it (a no-op for an unknown id)."""


# --- services --------------------------------------------------------------------------------------


class ServiceHealth(msgspec.Struct, frozen=True):
    """How a service is doing: ``ok`` False with a ``detail`` that says what is wrong."""

    ok: bool = True
    detail: str = ""


class ServiceContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a running engine gives its services.

    Attributes:
        store: the engine's event store (started).
        wake: schedules a reconcile round of an execution (a service that learns something about
            it, such as a poller finding an external job done); a no-op in a client engine.
        serving: the engine runs executions (a server) rather than being a client
            (``run_loop=False``): a service that cannot reach what it talks to at start then logs
            and retries, where a client's raises.
        catalog: the engine's catalog (started), or None when it has none: what a lineage sink
            reads the artifacts of node runs from.
    """

    store: EventStore
    wake: Callable[[str], None]
    serving: bool = False
    catalog: Catalog | None = None


class Service(abc.ABC):
    """A long-running component the engine starts and stops with itself: an outbox relay, a
    reservation heartbeat, an agent poller, a web console.

    Contract: ``start`` is awaited once, in order of ``Engine(services=[...])``, before the engine
    is ready; it returns when the service is ready and raises (a typed `SlipstreamError`) if it
    cannot start. ``run`` then runs in the engine's task group until cancelled at shutdown; it must
    survive transient failures of what it talks to (log, back off, report through ``health``).
    ``stop`` is awaited once after ``run`` was cancelled, in reverse order, and releases resources.
    ``health`` is cheap and never raises.
    """

    name: str = ""

    @abc.abstractmethod
    async def start(self, context: ServiceContext) -> None:
        """Connect and prepare; return when ready."""

    async def run(self) -> None:
        """The service's work, until cancelled. The default has none: it waits."""
        await anyio.sleep_forever()

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release what ``start`` acquired."""

    def health(self) -> ServiceHealth:
        """Whether the service is working; the default reports healthy."""
        return ServiceHealth()


# --- blob store ------------------------------------------------------------------------------------

BLOB_URL_PREFIX = "blob://"
# The one accepted spelling of an address: no other algorithm, no upper case, nothing else. Backends
# build paths from addresses, so this pattern is what keeps every name inside its store.
_BLOB_ADDRESS = re.compile(r"sha256/[0-9a-f]{64}")
DEFAULT_BLOB_CHUNK_SIZE = 1 << 20


def parse_blob_address(text: str) -> str:
    """The canonical address ``sha256/<64 lowercase hex>`` named by ``text``.

    Args:
        text: an address (``sha256/<hex>``) or its URL form (``blob://sha256/<hex>``).

    Returns:
        The address, without the ``blob://`` prefix.

    Raises:
        InvalidBlobAddress: anything else: another algorithm, upper-case or short hex, path
            separators or ``..``, an absolute path, surrounding whitespace, a non-string.
    """
    if not isinstance(text, str):
        raise InvalidBlobAddress(text, f"expected a string, got {type(text).__name__}")
    address = text[len(BLOB_URL_PREFIX) :] if text.startswith(BLOB_URL_PREFIX) else text
    if _BLOB_ADDRESS.fullmatch(address) is None:
        algorithm, slash, _ = address.partition("/")
        if address.startswith("/") or "\\" in address or ".." in address or address.count("/") > 1:
            why = "it names a path, not a content hash"
        elif not slash:
            why = "it lacks the 'sha256/' prefix"
        elif algorithm != "sha256":
            why = f"algorithm {algorithm!r} is not supported (only sha256)"
        else:
            why = "the digest must be exactly 64 lowercase hex digits"
        raise InvalidBlobAddress(text, why)
    return address


def blob_url(address: str) -> str:
    """The URL form ``blob://sha256/<hex>`` of a blob address (validated)."""
    return BLOB_URL_PREFIX + parse_blob_address(address)


def blob_address(data: bytes | bytearray | memoryview) -> str:
    """The content address ``sha256/<hex>`` of ``data`` (pure; what `BlobStore.put` returns for it)."""
    return "sha256/" + hashlib.sha256(data).hexdigest()


class BlobStore(abc.ABC):
    """Content-addressed storage for values too big to travel inside events.

    A blob's address is ``sha256/<64 lowercase hex>`` of its bytes, and its URL form is
    ``blob://sha256/<hex>`` (`blob_url`). Every backend passes
    ``tests/contract/test_blobstore_contract.py``.

    Contract:
    - ``start`` must be awaited before use and ``close`` after; both are idempotent.
    - ``put`` and ``put_stream`` return the address of the bytes they were given. They are
      idempotent and deduplicated: storing bytes that are already stored keeps one copy and returns
      the same address. They are atomic: a reader never sees part of a blob, and a put that fails
      or is cancelled midway leaves no blob (at most a temporary object that the store removes).
      Concurrent puts of the same bytes, from one process or several, are safe.
    - ``put_stream`` takes the bytes as chunks (an iterable or an async iterable) and holds about
      one chunk in memory, for values too big to hold twice.
    - Reads (``get``, ``open``, ``read_range``, ``size``) of an address that holds no blob raise
      `BlobNotFound`. ``open`` yields the bytes in chunks of at most ``chunk_size`` bytes.
    - Verification: with ``verify`` on, ``get`` re-hashes the bytes and raises `CorruptBlob` on a
      mismatch, and ``open`` hashes as it yields and raises `CorruptBlob` after the last chunk (so a
      streaming reader must not act on the bytes before the iterator is exhausted). ``read_range``
      is never verified. ``verify=None`` uses the store's ``verify_reads``: off for a local
      directory (the store wrote each file itself, atomically, and hashed it on the way in; reads
      are the hot path), on for stores reached over a network or written by other clients.
    - Names never escape the store: every method accepts only addresses that `parse_blob_address`
      accepts (anything else is `InvalidBlobAddress`, raised before any I/O), and a backend on a
      file system never follows a symbolic link planted inside its directory.
    - ``delete`` removes a blob (for eviction) and returns whether it was there. The caller must
      know the blob is no longer referenced: a put of the same bytes racing the delete may return
      an address whose blob is then gone.
    - Failures to reach the store are `BlobStoreUnavailable`.
    Backends implement ``put``, ``put_stream`` and the ``_``-prefixed methods, which receive
    addresses already validated; this base class validates and verifies.
    """

    name: str = ""
    verify_reads: bool = False

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Create or connect to the store."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``start`` acquired."""

    async def __aenter__(self) -> BlobStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def put(self, data: bytes | bytearray | memoryview) -> str:
        """Store ``data``; return its address ``sha256/<hex>`` (deduplicated, atomic)."""

    @abc.abstractmethod
    async def put_stream(self, chunks: AsyncIterable[bytes] | Iterable[bytes]) -> str:
        """Store the concatenation of ``chunks``, hashing while writing; return its address.

        If iterating ``chunks`` raises, or the call is cancelled, nothing is stored and the error
        propagates.
        """

    async def get(self, address: str, *, verify: bool | None = None) -> bytes:
        """The bytes of the blob at ``address``.

        Args:
            address: ``sha256/<hex>`` or ``blob://sha256/<hex>``.
            verify: re-hash the bytes (``None``: the store's ``verify_reads``).

        Raises:
            InvalidBlobAddress: a malformed address.
            BlobNotFound: no blob there.
            CorruptBlob: with verification on, the bytes do not hash to ``address``.
        """
        address = parse_blob_address(address)
        data = await self._get(address)
        if self.verify_reads if verify is None else verify:
            actual = await anyio.to_thread.run_sync(blob_address, data)
            if actual != address:
                raise CorruptBlob(address, actual, str(self))
        return data

    def open(
        self, address: str, *, chunk_size: int = DEFAULT_BLOB_CHUNK_SIZE, verify: bool | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Stream the blob at ``address`` in chunks of at most ``chunk_size`` bytes.

        The address is checked now; the blob is opened at the first iteration (`BlobNotFound` is
        raised there). Wrap it in ``contextlib.aclosing`` to release the handle promptly when
        stopping early.

        Raises:
            InvalidBlobAddress: a malformed address.
            ValueError: ``chunk_size`` below 1.
        """
        address = parse_blob_address(address)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1 byte, got {chunk_size}")
        chunks = self._open(address, chunk_size)
        if not (self.verify_reads if verify is None else verify):
            return chunks
        return self._verified(address, chunks)

    async def read_range(self, address: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the blob from ``offset`` (fewer at its end; never verified).

        Raises:
            InvalidBlobAddress: a malformed address.
            BlobNotFound: no blob there.
            ValueError: a negative ``offset`` or ``length``.
        """
        address = parse_blob_address(address)
        if offset < 0 or length < 0:
            raise ValueError(f"read_range needs offset >= 0 and length >= 0, got {offset} and {length}")
        return await self._read_range(address, offset, length)

    async def exists(self, address: str) -> bool:
        """Whether a blob is stored at ``address`` (`InvalidBlobAddress` for a malformed one)."""
        return await self._exists(parse_blob_address(address))

    async def size(self, address: str) -> int:
        """The blob's length in bytes (`BlobNotFound` if absent)."""
        return await self._size(parse_blob_address(address))

    async def delete(self, address: str) -> bool:
        """Remove the blob; True if it was there, False if it was not (see the contract's caveat)."""
        return await self._delete(parse_blob_address(address))

    async def _verified(self, address: str, chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        hasher = hashlib.sha256()
        try:
            async for chunk in chunks:
                await anyio.to_thread.run_sync(hasher.update, chunk)
                yield chunk
        finally:
            await chunks.aclose()
        actual = "sha256/" + hasher.hexdigest()
        if actual != address:
            raise CorruptBlob(address, actual, str(self))

    @abc.abstractmethod
    async def _get(self, address: str) -> bytes:
        """The blob's bytes, or `BlobNotFound`."""

    @abc.abstractmethod
    def _open(self, address: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        """An async generator of the blob's bytes in chunks of at most ``chunk_size``."""

    @abc.abstractmethod
    async def _read_range(self, address: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``, or `BlobNotFound`."""

    @abc.abstractmethod
    async def _exists(self, address: str) -> bool:
        """Whether the blob is stored."""

    @abc.abstractmethod
    async def _size(self, address: str) -> int:
        """The blob's length, or `BlobNotFound`."""

    @abc.abstractmethod
    async def _delete(self, address: str) -> bool:
        """Remove the blob; whether it was there."""


# --- catalog ---------------------------------------------------------------------------------------


class CacheKey(msgspec.Struct, frozen=True, array_like=True):
    """What a cached output is found by (DESIGN section 9): the task's identity and a hash of its inputs.

    ``interface`` is the hash of the task's typed signature (a changed interface misses), ``inputs``
    the hash of the input literals left after ``cache_ignore_inputs`` (`engine.literals.inputs_hash`).
    ``digest`` is the one string a backend indexes.
    """

    project: str
    domain: str
    task: str
    cache_version: str
    interface: str
    inputs: str

    @property
    def digest(self) -> str:
        """sha256 hex of the key's canonical encoding (stable across processes and machines)."""
        return hashlib.sha256(_KEY_ENCODER.encode(self)).hexdigest()

    @property
    def dataset(self) -> Dataset:
        """The dataset the key's artifacts belong to: everything but the inputs."""
        return Dataset(self.project, self.domain, self.task, self.cache_version, self.interface)


_KEY_ENCODER = msgspec.msgpack.Encoder(order="deterministic")


class Dataset(msgspec.Struct, frozen=True):
    """The artifacts of one task version in one project and domain (Flyte datacatalog's Dataset)."""

    project: str
    domain: str
    name: str  # the task
    version: str  # its cache_version
    interface: str  # the hash of its typed signature

    @property
    def id(self) -> str:
        """A short stable id: sha256 hex of the fields, 32 digits."""
        return hashlib.sha256(_KEY_ENCODER.encode(self)).hexdigest()[:32]


class Artifact(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Outputs a node produced, kept for reuse (Flyte datacatalog's Artifact).

    ``id`` is derived from the cache key and the producing attempt, so recording the same
    attempt's outputs twice (a round replayed after a crash) stores one artifact. ``outputs`` are
    literals; values in the blob store are referenced, not copied. ``name``/``partitions`` are set
    on artifacts published under a name (`Catalog.publish`).
    """

    id: str
    dataset: Dataset
    key: str  # CacheKey.digest
    input_hash: str
    outputs: dict[str, bytes]
    execution_id: str
    node_id: str
    attempt: int
    created_at: datetime
    tags: list[str] = []
    partitions: dict[str, str] = {}


class ArtifactDraft(msgspec.Struct, frozen=True):
    """An artifact to record: the key, the outputs, and the attempt that produced them."""

    key: CacheKey
    outputs: dict[str, bytes]
    execution_id: str
    node_id: str
    attempt: int

    @property
    def artifact_id(self) -> str:
        """The id the artifact gets (content of the key and the producing attempt)."""
        return self.id_for(self.key.digest, self.execution_id, self.node_id, self.attempt)

    @staticmethod
    def id_for(digest: str, execution_id: str, node_id: str, attempt: int) -> str:
        """`artifact_id` from a key's digest already computed."""
        return hashlib.sha256(f"{digest}:{execution_id}:{node_id}:{attempt}".encode()).hexdigest()[:32]


class Reservation(msgspec.Struct, frozen=True):
    """Who computes a cache key now (``cache_serialize``): held until ``expires_at`` unless renewed."""

    key: str  # CacheKey.digest
    owner: str
    expires_at: datetime


class LineageEdge(msgspec.Struct, frozen=True):
    """``artifact`` was consumed (``direction="in"``) or produced (``"out"``) by a node run."""

    artifact: str
    direction: Literal["in", "out"]
    execution_id: str
    node_id: str
    attempt: int


class LineageLink(msgspec.Struct, frozen=True):
    """The node run ``execution_id``/``node_id``/``attempt`` consumed ``source`` and produced ``target``."""

    source: str
    target: str
    execution_id: str
    node_id: str
    attempt: int


class Lineage(msgspec.Struct, frozen=True):
    """The artifacts reachable from ``root`` in one direction: ``links`` between them, each found
    at ``depth`` steps from the root (1 for the root's neighbours)."""

    root: str
    direction: Literal["upstream", "downstream"]
    links: list[LineageLink]
    depths: dict[str, int]


class Catalog(abc.ABC):
    """Memoized outputs, reservations, named artifacts and lineage (DESIGN section 9).

    Contract (``tests/contract/test_catalog_contract.py`` runs it against every backend):
    - ``start`` must be awaited before use (it applies the backend's migrations) and ``close``
      after; both are idempotent. Failures to reach the backend are `StoreUnavailable`.
    - ``put`` is idempotent per draft (the artifact id derives from key and attempt) and returns
      the stored artifact. ``lookup`` returns the newest artifact of the key created after
      ``now - max_age`` (any age when ``max_age`` is None), else None. ``lookup_many`` answers
      several keys at once, in order.
    - ``reserve(key, owner)`` grants the key to ``owner`` when nobody holds it, when ``owner``
      already does (renewing it), or when the holder's reservation expired (a takeover); it
      returns the reservation in force afterwards, so the caller holds it iff its ``owner`` is
      the caller's. ``heartbeat`` extends the listed reservations still held by their owners;
      ``release`` drops one if ``owner`` holds it. Two owners never hold one key at once.
    - ``evict`` removes artifacts (by id, or every artifact of a task) and returns how many.
    - ``publish`` gives an artifact a name and partitions; ``query`` finds named artifacts whose
      partitions include the given ones, newest first.
    - ``record_lineage`` stores edges between node runs and artifacts; ``lineage`` walks them.
    """

    async def lineage(
        self,
        artifact_id: str,
        *,
        direction: Literal["upstream", "downstream"] = "upstream",
        depth: int | None = None,
    ) -> Lineage:
        """The artifacts ``artifact_id`` was made from (``upstream``) or that were made from it
        (``downstream``), ``depth`` steps at most (all when None), found breadth first.

        Raises:
            ValueError: an unknown direction or a depth below 1.
        """
        if direction not in ("upstream", "downstream"):
            raise ValueError(f"direction must be 'upstream' or 'downstream', got {direction!r}")
        if depth is not None and depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        # upstream: the run that produced an artifact, then what that run consumed; downstream:
        # the runs that consumed it, then what they produced
        first, then = ("out", "in") if direction == "upstream" else ("in", "out")
        links: list[LineageLink] = []
        depths = {artifact_id: 0}
        frontier = [artifact_id]
        level = 0
        while frontier and (depth is None or level < depth):
            level += 1
            found: list[str] = []
            for current in frontier:
                for edge in await self.edges(artifact=current):
                    if edge.direction != first:
                        continue
                    for other in await self.edges(execution_id=edge.execution_id, node_id=edge.node_id):
                        if (other.attempt, other.direction) != (edge.attempt, then):
                            continue
                        pair = (other.artifact, current) if direction == "upstream" else (current, other.artifact)
                        source, target = pair
                        links.append(LineageLink(source, target, edge.execution_id, edge.node_id, edge.attempt))
                        if other.artifact not in depths:
                            depths[other.artifact] = level
                            found.append(other.artifact)
            frontier = found
        return Lineage(artifact_id, direction, links, depths)

    name: str = ""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect and apply migrations."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def __aenter__(self) -> Catalog:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def lookup(self, key: CacheKey, *, now: datetime, max_age: float | None = None) -> Artifact | None:
        """The newest artifact stored under ``key`` not older than ``max_age`` seconds, or None."""
        return (await self.lookup_many([key], now=now, max_age=max_age))[0]

    @abc.abstractmethod
    async def lookup_many(
        self, keys: Sequence[CacheKey], *, now: datetime, max_age: float | None = None
    ) -> list[Artifact | None]:
        """`lookup` for each key, in one round trip where the backend allows."""

    async def put(self, draft: ArtifactDraft, *, now: datetime) -> Artifact:
        """Record ``draft`` (idempotent per draft); return the stored artifact."""
        return (await self.put_many([draft], now=now))[0]

    @abc.abstractmethod
    async def put_many(self, drafts: Sequence[ArtifactDraft], *, now: datetime) -> list[Artifact]:
        """`put` for each draft, in one transaction."""

    @abc.abstractmethod
    async def get(self, artifact_id: str) -> Artifact | None:
        """The artifact ``artifact_id`` (an id or a unique prefix of at least 8 digits), or None."""

    @abc.abstractmethod
    async def list_artifacts(
        self,
        *,
        project: str | None = None,
        domain: str | None = None,
        task: str | None = None,
        limit: int = 100,
    ) -> list[Artifact]:
        """Artifacts newest first, filtered."""

    @abc.abstractmethod
    async def evict(self, *, artifact_id: str | None = None, task: str | None = None) -> int:
        """Remove one artifact, or every artifact of ``task``; return how many went."""

    @abc.abstractmethod
    async def reserve(self, key: str, owner: str, *, now: datetime, ttl: float) -> Reservation:
        """Try to hold ``key`` for ``ttl`` seconds; return the reservation in force afterwards."""

    @abc.abstractmethod
    async def heartbeat(self, held: Sequence[tuple[str, str]], *, now: datetime, ttl: float) -> int:
        """Extend each ``(key, owner)`` reservation still held by that owner; return how many."""

    @abc.abstractmethod
    async def release(self, key: str, owner: str) -> None:
        """Drop the reservation of ``key`` if ``owner`` holds it."""

    @abc.abstractmethod
    async def publish(self, artifact_id: str, name: str, partitions: Mapping[str, str], *, now: datetime) -> None:
        """Make ``artifact_id`` findable as ``name`` with ``partitions`` (an artifact may carry several names)."""

    @abc.abstractmethod
    async def query(
        self,
        name: str,
        partitions: Mapping[str, str] | None = None,
        *,
        latest: bool = True,
        project: str | None = None,
        domain: str | None = None,
    ) -> list[Artifact]:
        """Artifacts published as ``name`` whose partitions include ``partitions``, newest first
        (only the newest with ``latest``); of the datasets of ``project`` and ``domain`` only, when
        given (a scoped engine's launch asks so: names do not cross projects)."""

    @abc.abstractmethod
    async def record_lineage(self, edges: Sequence[LineageEdge]) -> None:
        """Store edges (idempotent)."""

    @abc.abstractmethod
    async def edges(
        self, *, artifact: str | None = None, execution_id: str | None = None, node_id: str | None = None
    ) -> list[LineageEdge]:
        """The edges touching ``artifact``, or those of the runs of ``execution_id`` (of its node
        ``node_id`` only, when given)."""
