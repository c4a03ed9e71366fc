"""The pure planner: ``plan_round(state, observations) -> Plan(events, actions, wake_at)``.

No I/O, no clock, no randomness: everything the round knows comes in ``Observations``. The planner
advances ``state`` by the events it returns (the fold is not copy-on-write); a caller that fails to
persist them must discard that state and fold it again from the log.

A round costs what changed: it looks at the completions it was given, the nodes the fold marked
ready, to-skip or retrying, the maps whose elements changed, and the scopes that finished; it never
walks every node of the execution.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec

from engine.events import (
    ArrayExpanded,
    DynamicExpanded,
    Event,
    ExecutionFailed,
    ExecutionStarted,
    ExecutionSucceeded,
    NodeFailed,
    NodeQueued,
    NodeRunning,
    NodeSkipped,
    NodeSucceeded,
)
from engine.interfaces import TaskKey, TaskRequest, TaskStatus
from engine.literals import NIL_LITERAL, join_list_literal, split_list_literal
from engine.models import ArrayNode, DynamicNode, ErrorInfo, SubworkflowNode, TaskNode, WorkflowSpec
from engine.state import ExecutionState, NodeState

__all__ = ["Action", "Cancel", "Observations", "Plan", "PlannerConfig", "Submit", "next_event", "plan_round"]

_spec_decoder = msgspec.msgpack.Decoder(WorkflowSpec)


@dataclass(frozen=True, slots=True)
class PlannerConfig:
    """Tunables of the planner.

    The delay before retry ``n`` (1-based) is ``retry_delay * 2 ** (n - 1)``, capped at
    ``retry_delay_max``.
    """

    default_executor: str = "local"
    retry_delay: float = 1.0
    retry_delay_max: float = 60.0

    def backoff(self, failures: int) -> timedelta:
        return timedelta(seconds=min(self.retry_delay * 2 ** max(failures - 1, 0), self.retry_delay_max))


@dataclass(frozen=True, slots=True)
class Observations:
    """What the control loop saw since the last round.

    Attributes:
        now: the current time (UTC); events of the round are stamped with it.
        completions: statuses the executors reported for attempts of this execution.
        in_flight: attempts this process handed to an executor and has not forgotten.
        resubmit: set on the first round after the state was loaded from the log: every queued or
            running attempt that is not in ``in_flight`` is submitted again (idempotent per key).
    """

    now: datetime
    completions: Mapping[TaskKey, TaskStatus] = field(default_factory=dict)
    in_flight: Collection[TaskKey] = frozenset()
    resubmit: bool = False


class Submit(msgspec.Struct, frozen=True):
    """Hand ``request`` to the executor named ``executor``."""

    request: TaskRequest
    executor: str


class Cancel(msgspec.Struct, frozen=True):
    """Stop the attempt ``key`` and forget it."""

    key: TaskKey
    executor: str


Action = Submit | Cancel


@dataclass(slots=True)
class Plan:
    """The outcome of a round: events to append, then actions to carry out, then when to wake."""

    events: list[Event]
    actions: list[Action]
    wake_at: datetime | None = None


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


def plan_round(state: ExecutionState, observations: Observations, config: PlannerConfig | None = None) -> Plan:
    """Decide the next events and actions of one execution.

    Args:
        state: the execution's folded state; advanced in place by the returned events.
        observations: what the loop saw (time, executor reports, attempts in flight).
        config: retry back-off and the default executor name.

    Returns:
        The events to append (numbered from ``state.version + 1`` before the call), the actions to
        carry out once they are durable, and the earliest time a timer needs a new round.
    """
    planner = _Round(state, observations, config or PlannerConfig())
    planner.run()
    return Plan(planner.events, planner.actions, planner.wake_at)


class _Round:
    def __init__(self, state: ExecutionState, observations: Observations, config: PlannerConfig) -> None:
        self.state = state
        self.obs = observations
        self.config = config
        self.now = observations.now
        self.events: list[Event] = []
        self.actions: list[Action] = []
        self.wake_at: datetime | None = None
        self.submitted: set[TaskKey] = set()
        created = state.created
        assert created is not None, "plan_round needs a created execution"
        self.created = created
        self.max_parallelism = created.spec.max_parallelism

    # -- plumbing ------------------------------------------------------------------------------------

    def emit(self, event_type: type[Event], node_id: str = "", attempt: int = 0, **fields: Any) -> None:
        self.events.append(
            next_event(self.state, self.state.execution_id, self.now, event_type, node_id, attempt, **fields)
        )

    def wake(self, at: datetime) -> None:
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at

    def key(self, node: NodeState) -> TaskKey:
        return TaskKey(self.state.execution_id, node.node_id, node.attempt)

    def executor_of(self, node: NodeState) -> str:
        return node.options.executor or self.config.default_executor

    def has_capacity(self) -> bool:
        return self.max_parallelism is None or len(self.state.active) < self.max_parallelism

    def submit(self, node: NodeState) -> None:
        spec = node.spec
        assert isinstance(spec, TaskNode | DynamicNode | ArrayNode)
        options = spec.options
        key = self.key(node)
        request = TaskRequest(
            key=key,
            task=spec.task,
            inputs=self.state.node_inputs(node),
            kind="dynamic" if isinstance(spec, DynamicNode) else "task",
            resources=options.resources,
            timeout=options.timeout,
            project=self.created.project,
            domain=self.created.domain,
            secrets=options.secrets,
        )
        self.actions.append(Submit(request, self.executor_of(node)))
        self.submitted.add(key)

    def cancel(self, node: NodeState) -> None:
        self.actions.append(Cancel(self.key(node), self.executor_of(node)))

    # -- the round -----------------------------------------------------------------------------------

    def run(self) -> None:
        state = self.state
        if not state.is_terminal:
            if state.phase == "created":
                self.emit(ExecutionStarted)
            self.observe_completions()
            self.expire_timeouts()
            self.start_retries()
            while not state.is_terminal and self.settle():
                pass
        if state.is_terminal:
            # a failure found late in the round may follow launches of the same round: those
            # attempts were never handed out, so drop them instead of starting orphans
            self.actions = [a for a in self.actions if not isinstance(a, Submit)]
            self.cancel_everything()
            return
        if self.obs.resubmit:
            for node_id in state.active:
                node = state.nodes[node_id]
                key = self.key(node)
                if key not in self.obs.in_flight and key not in self.submitted:
                    self.submit(node)
        if state.deadlines:
            self.wake(state.deadlines[0][0])

    def settle(self) -> bool:
        """One pass over everything a change can unblock; True if it emitted events."""
        before = len(self.events)
        self.fail_fast_check()
        if self.state.is_terminal:
            return False
        self.skip_unrunnable()
        self.finish_scopes()
        if self.state.is_terminal:
            return False
        self.advance_arrays()
        self.launch_ready()
        return len(self.events) > before

    def observe_completions(self) -> None:
        state = self.state
        for key, status in self.obs.completions.items():
            node = state.nodes.get(key.node_id)
            if node is None or key.node_id not in state.active or node.attempt != key.attempt:
                continue  # stale report of an attempt that already ended
            if status.phase in ("queued",):
                continue
            if status.phase == "lost":
                # the executor forgot an attempt it had accepted (a worker pool restarted): a system
                # failure, retried on the system budget instead of resubmitted forever
                error = ErrorInfo(kind="system", message=f"executor lost attempt {node.attempt}", retryable=True)
                self.emit(NodeFailed, node.node_id, node.attempt, error=error)
                continue
            if node.phase == "queued":
                self.emit(
                    NodeRunning,
                    node.node_id,
                    node.attempt,
                    executor=self.executor_of(node),
                    worker=status.worker,
                    gpu_ids=list(status.gpu_ids),
                )
            if status.phase == "succeeded":
                if isinstance(node.spec, DynamicNode) and node.array_parent is None:
                    self.expand_dynamic(node, status)
                else:
                    self.emit(NodeSucceeded, node.node_id, node.attempt, outputs=status.outputs)
            elif status.phase == "failed":
                error = status.error or ErrorInfo(kind="system", message="executor reported no error")
                self.emit(NodeFailed, node.node_id, node.attempt, error=error)

    def expand_dynamic(self, node: NodeState, status: TaskStatus) -> None:
        try:
            spec = _spec_decoder.decode(status.dynamic_spec or b"")
        except msgspec.DecodeError as exc:
            error = ErrorInfo(kind="system", message=f"dynamic node returned no valid spec: {exc}", retryable=True)
            self.emit(NodeFailed, node.node_id, node.attempt, error=error)
            return
        self.emit(DynamicExpanded, node.node_id, node.attempt, spec=spec)

    def expire_timeouts(self) -> None:
        state = self.state
        while state.deadlines and state.deadlines[0][0] <= self.now:
            _deadline, node_id, attempt = heapq.heappop(state.deadlines)
            node = state.nodes[node_id]
            if node_id not in state.active or node.attempt != attempt:
                continue
            deadline = state.deadline_of(node)
            if deadline is not None and deadline > self.now:
                continue  # the attempt started late; the entry armed at its start fires later
            self.cancel(node)
            timeout = node.options.timeout
            error = ErrorInfo(
                kind="timeout",
                message=f"attempt {attempt} did not finish within its timeout of {timeout:g}s",
                retryable=True,
            )
            self.emit(NodeFailed, node_id, attempt, error=error)

    def start_retries(self) -> None:
        state = self.state
        for node_id in list(state.retrying):
            node = state.nodes[node_id]
            assert node.failed_at is not None
            retry_at = node.failed_at + self.config.backoff(node.user_failures + node.system_failures)
            if retry_at > self.now:
                self.wake(retry_at)
            elif self.has_capacity():
                self.emit(NodeQueued, node_id, node.attempt + 1)
                self.submit(node)

    def fail_fast_check(self) -> None:
        """End every fail_fast scope that had a node fail: the root fails the execution; a nested
        scope fails its owner node at once (cancelling its running children), which in turn
        counts as a failure of the enclosing scope under that scope's own policy."""
        state = self.state
        while state.failed_fast and not state.is_terminal:
            owner = next(iter(state.failed_fast))
            del state.failed_fast[owner]
            scope = state.scopes[owner]
            assert scope.failure is not None
            if owner is None:
                self.emit(ExecutionFailed, error=scope.failure)
                return
            node = state.nodes[owner]
            if node.phase != "running":
                continue
            prefix = owner + "/"
            for child in [key for key in state.active if key.startswith(prefix)]:
                self.cancel(state.nodes[child])
            self.emit(NodeFailed, owner, node.attempt, error=self.child_failure(scope.failure))

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

    def skip_unrunnable(self) -> None:
        state = self.state
        while state.to_skip:
            node_id = next(iter(state.to_skip))
            self.emit(NodeSkipped, node_id, reason="an upstream node failed")

    def finish_scopes(self) -> None:
        state = self.state
        while state.finished_scopes and not state.is_terminal:
            owner = next(iter(state.finished_scopes))
            del state.finished_scopes[owner]
            scope = state.scopes[owner]
            if owner is None:
                if scope.failure is not None:
                    self.emit(ExecutionFailed, error=scope.failure)
                else:
                    self.emit(ExecutionSucceeded, outputs=state.scope_outputs(scope))
                continue
            node = state.nodes[owner]
            if node.phase != "running":
                continue
            if scope.failure is not None:
                self.emit(NodeFailed, owner, node.attempt, error=self.child_failure(scope.failure))
            else:
                self.emit(NodeSucceeded, owner, node.attempt, outputs=state.scope_outputs(scope))

    def advance_arrays(self) -> None:
        state = self.state
        starved: list[str] = []
        while state.changed_arrays:
            array_id = next(iter(state.changed_arrays))
            del state.changed_arrays[array_id]
            node = state.nodes[array_id]
            if node.phase != "running":
                continue
            spec = node.spec
            assert isinstance(spec, ArrayNode)
            array = state.arrays[array_id]
            needed = math.ceil(spec.min_success_ratio * array.size - 1e-9)
            if array.failed > array.size - needed:
                self.fail_array(node, needed)
            elif array.finished == array.size:
                outputs = join_list_literal(NIL_LITERAL if out is None else out for out in array.outputs)
                self.emit(NodeSucceeded, array_id, node.attempt, outputs={"o0": outputs})
            else:
                limit = spec.concurrency or array.size
                while array.next_index < array.size and array.in_flight < limit:
                    if state.failed_fast:
                        break  # a fail_fast scope is about to end; settle it first
                    if not self.has_capacity():
                        starved.append(array_id)
                        break
                    element_id = f"{array_id}/{array.next_index}"
                    self.emit(NodeQueued, element_id, 1)
                    self.submit(state.nodes[element_id])
        for array_id in starved:
            state.changed_arrays[array_id] = None  # retried when capacity frees up

    def fail_array(self, node: NodeState, needed: int) -> None:
        state = self.state
        array = state.arrays[node.node_id]
        prefix = node.node_id + "/"
        for element_id in [key for key in state.active if key.startswith(prefix)]:
            self.cancel(state.nodes[element_id])
        first = array.first_failure or ErrorInfo(kind="user", message="elements failed")
        error = ErrorInfo(
            kind=first.kind,
            message=(
                f"{array.failed} of {array.size} map elements failed; min_success_ratio needs {needed} "
                f"to succeed. First failure ({first.node_id or 'element'}): {first.message}"
            ),
            traceback=first.traceback,
            retryable=False,
        )
        self.emit(NodeFailed, node.node_id, node.attempt, error=error)

    def launch_ready(self) -> None:
        state = self.state
        for node_id in list(state.ready):
            if state.is_terminal or state.failed_fast:
                return  # a fail_fast scope is about to end; settle it first
            if node_id not in state.ready:
                continue
            node = state.nodes[node_id]
            spec = node.spec
            if isinstance(spec, SubworkflowNode):
                self.emit(NodeQueued, node_id, 1)
            elif isinstance(spec, ArrayNode):
                self.emit(NodeQueued, node_id, 1)
                self.expand_array(node, spec)
            elif self.has_capacity():
                self.emit(NodeQueued, node_id, 1)
                self.submit(node)

    def expand_array(self, node: NodeState, spec: ArrayNode) -> None:
        assert node.scope is not None
        sizes = {
            name: len(split_list_literal(self.state.resolve(node.scope, spec.inputs[name]))) for name in spec.mapped
        }
        if len(set(sizes.values())) > 1:
            detail = ", ".join(f"{name}={size}" for name, size in sorted(sizes.items()))
            error = ErrorInfo(
                kind="user",
                message=f"map node {node.node_id!r}: mapped inputs have different lengths ({detail}); "
                "pass lists of equal length or bind the shared ones with functools.partial",
                retryable=False,
            )
            self.emit(NodeFailed, node.node_id, node.attempt, error=error)
            return
        self.emit(ArrayExpanded, node.node_id, node.attempt, size=next(iter(sizes.values()), 0))

    def cancel_everything(self) -> None:
        """The execution ended: stop every attempt still running for it."""
        state = self.state
        for key in self.obs.in_flight:
            node = state.nodes.get(key.node_id)
            if node is not None and key.node_id in state.active and node.attempt == key.attempt:
                self.actions.append(Cancel(key, self.executor_of(node)))
