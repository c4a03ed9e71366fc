"""One planning round's working set: the state, what was observed, and what the round decided.

`Round` is the toolbox the planner and the node handlers share: emit the next event (applied to
the state at once, so the next decision sees it), submit or cancel an attempt, ask for a timer.
It does no I/O and routes nothing by node kind; `propeller._planner` does the routing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from engine.events import Event, NodeRunning
from engine.interfaces import TaskKey, TaskRequest, TaskStatus
from engine.literals import INLINE_LIMIT, offload
from engine.models import ErrorInfo
from engine.state import ExecutionState, NodeState
from propeller._actions import Action, CacheOutcome, Cancel, Release, Submit

__all__ = ["Observations", "PlannerConfig", "Round", "next_event"]


def _never(executor: str, request: TaskRequest) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class PlannerConfig:
    """Tunables of the planner.

    The delay before retry ``n`` (1-based) is ``retry_delay * 2 ** (n - 1)``, capped at
    ``retry_delay_max``. Map elements go out in chunks sized to take about ``chunk_seconds`` each
    (measured from the chunks that finished), at most ``chunk_max`` elements.
    ``starts_on_submit(executor, request)`` tells whether that executor starts
    the attempt's body as soon as it is submitted (`Executor.starts_on_submit`): the planner then
    records ``NodeRunning`` in the round that submits it.
    """

    default_executor: str = "local"
    retry_delay: float = 1.0
    retry_delay_max: float = 60.0
    starts_on_submit: Callable[[str, TaskRequest], bool] = _never
    # map chunks: how many a map keeps in flight when `concurrency` does not say, how long one
    # should take (chunks grow while elements are fast), and their bounds
    map_chunks_in_flight: int = 16
    chunk_seconds: float = 0.05
    first_chunk_max: int = 32
    chunk_max: int = 4096
    inline_limit: int = INLINE_LIMIT  # literals above it go to the blob store, not into events
    # the catalog: whether there is one (cached tasks look up before they launch), and how long a
    # node waits before asking again for a key another execution is computing (cache_serialize)
    caching: bool = False
    cache_wait: float = 0.5
    live_logs: str = ""  # where attempts mirror their output while they run (`TaskRequest.live_logs`)

    def backoff(self, failures: int) -> timedelta:
        return timedelta(seconds=min(self.retry_delay * 2 ** max(failures - 1, 0), self.retry_delay_max))


@dataclass(frozen=True, slots=True)
class Observations:
    """What the control loop saw since the last round.

    Attributes:
        now: the current time (UTC); events of the round are stamped with it.
        completions: statuses the executors reported for attempts of this execution (starts,
            ends, and ``lost`` for attempts an executor does not know).
        in_flight: attempts this process handed to an executor, or found running after a
            restart, and has not forgotten.
        resubmit: set on the first round after the state was loaded from the log: every queued
            attempt that is not in ``in_flight`` is submitted again (idempotent per key).
        cache: the catalog's answers to lookups, by node id (a map's by the map's id).
        cache_pending: node ids whose lookup is still out: they wait for its answer.
    """

    now: datetime
    completions: Mapping[TaskKey, TaskStatus] = field(default_factory=dict)
    in_flight: Collection[TaskKey] = frozenset()
    resubmit: bool = False
    cache: Mapping[str, CacheOutcome] = field(default_factory=dict)
    cache_pending: Collection[str] = frozenset()


def next_event(
    state: ExecutionState,
    execution_id: str,
    at: datetime,
    event_type: type[Event],
    node_id: str = "",
    attempt: int = 0,
    **fields: Any,
) -> Event:
    """Make the event that follows ``state`` (numbered ``state.version + 1``) and apply it to ``state``.

    Pure steps (the planner, recovery) build their events this way so that each one is checked
    against the state it follows as it is made, and the next decision sees its effect.
    """
    event = event_type(
        execution_id=execution_id, version=state.version + 1, at=at, node_id=node_id, attempt=attempt, **fields
    )
    state.apply(event)  # type: ignore[arg-type]
    return event


class Round:
    """The state being advanced, the observations, and the events and actions decided so far."""

    def __init__(self, state: ExecutionState, observations: Observations, config: PlannerConfig) -> None:
        created = state.created
        assert created is not None, "plan_round needs a created execution"
        self.state = state
        self.obs = observations
        self.config = config
        self.now = observations.now
        self.created = created
        self.events: list[Event] = []
        self.actions: list[Action] = []
        self.wake_at: datetime | None = None
        self.submitted: set[TaskKey] = set()
        self.blobs: dict[str, bytes] = {}  # stored before the round's events are appended
        self.looked_up: set[str] = set()  # nodes this round asked the catalog about

    def emit(self, event_type: type[Event], node_id: str = "", attempt: int = 0, **fields: Any) -> None:
        """Append the next event to the round and apply it to the state."""
        self.events.append(
            next_event(self.state, self.state.execution_id, self.now, event_type, node_id, attempt, **fields)
        )

    def inline(self, literal: bytes) -> bytes:
        """The literal to write into an event: itself, or a reference to blobs the round stores
        before its append (content-addressed, so the planner stays pure)."""
        kept, blobs = offload(literal, self.config.inline_limit)
        self.blobs.update(blobs)
        return kept

    def wake(self, at: datetime) -> None:
        """Ask for a round at ``at`` (the earliest request wins)."""
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at

    def key(self, node: NodeState) -> TaskKey:
        return TaskKey(self.state.execution_id, node.node_id, node.attempt)

    def executor_of(self, node: NodeState) -> str:
        return node.options.executor or self.config.default_executor

    def capacity(self) -> int | None:
        """How many more attempts (map elements count one each) ``max_parallelism`` allows
        in flight; None when it is unbounded."""
        limit = self.created.spec.max_parallelism
        if limit is None:
            return None
        return max(limit - len(self.state.active) - self.state.chunked_elements, 0)

    def has_capacity(self) -> bool:
        """Whether ``max_parallelism`` allows one more attempt in flight."""
        capacity = self.capacity()
        return capacity is None or capacity > 0

    def submit(self, node: NodeState) -> None:
        """Hand the node's current (queued) attempt to its executor."""
        options = node.options
        key = self.key(node)
        task = getattr(node.spec, "task", None)
        assert task is not None, f"node {node.node_id!r} names no task"
        chunk = node.chunk
        if chunk is None:
            inputs, mapped = self.state.node_inputs(node), {}
        else:
            array = self.state.arrays[node.array_parent or ""]
            inputs = array.broadcast
            mapped = {name: [values[i] for i in chunk.elements] for name, values in array.mapped.items()}
        request = TaskRequest(
            key=key,
            task=task,
            inputs=inputs,
            kind=node.spec.request_kind,  # type: ignore[arg-type]
            resources=options.resources,
            timeout=options.timeout,
            project=self.created.project,
            domain=self.created.domain,
            secrets=options.secrets,
            elements=list(chunk.elements) if chunk else [],
            element_attempts=list(chunk.attempts) if chunk else [],
            mapped=mapped,
            live_logs=self.config.live_logs,
        )
        executor = self.executor_of(node)
        self.actions.append(Submit(request, executor))
        self.submitted.add(key)
        if self.config.starts_on_submit(executor, request):
            # the body starts as the executor gets it: record the start now, durably before it
            self.emit(NodeRunning, node.node_id, node.attempt, executor=executor)
            self.actions.append(Release(key, executor))

    def record_start(self, node: NodeState, status: TaskStatus) -> None:
        """The executor says the queued attempt started: record it, then let its body run."""
        executor = self.executor_of(node)
        self.emit(
            NodeRunning,
            node.node_id,
            node.attempt,
            executor=executor,
            worker=status.worker,
            gpu_ids=list(status.gpu_ids),
            handle=status.handle,
        )
        self.actions.append(Release(self.key(node), executor))

    def cancel(self, node: NodeState) -> None:
        """Stop the node's current attempt."""
        self.actions.append(Cancel(self.key(node), node.executor or self.executor_of(node), node.handle))

    @staticmethod
    def child_failure(child: ErrorInfo) -> ErrorInfo:
        """The error of a composite node whose child failed for good."""
        return ErrorInfo(
            kind=child.kind,
            message=f"child node {child.node_id!r} failed: {child.message}",
            traceback=child.traceback,
            retryable=False,
            node_id=child.node_id,
        )
