"""The pure planner: ``plan_round(state, observations) -> Plan(events, actions, wake_at)``.

No I/O, no clock, no randomness: everything the round knows comes in ``Observations``. The planner
advances ``state`` by the events it returns (the fold is not copy-on-write); a caller that fails to
persist them must discard that state and fold it again from the log.

A round costs what changed: it looks at the completions it was given and at what the fold marked
(ready, to-skip and retrying nodes, maps whose elements moved, scopes that finished, attempts the
log no longer wants); it never walks every node of the execution. What a node kind does is its
handler's business (`propeller._nodes`); this module only routes.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime

from engine.events import (
    Event,
    ExecutionFailed,
    ExecutionStarted,
    ExecutionSucceeded,
    NodeFailed,
    NodeQueued,
    NodeSkipped,
    NodeSucceeded,
)
from engine.models import ErrorInfo
from engine.state import ExecutionState
from propeller._actions import Action, Cancel, Submit
from propeller._cache import record_outputs
from propeller._nodes import handler_for
from propeller._round import Observations, PlannerConfig, Round

__all__ = ["Plan", "plan_round"]


@dataclass(slots=True)
class Plan:
    """The outcome of a round: events to append, then actions to carry out, then when to wake."""

    events: list[Event]
    actions: list[Action]
    wake_at: datetime | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)  # to store before the events are appended


def plan_round(state: ExecutionState, observations: Observations, config: PlannerConfig | None = None) -> Plan:
    """Decide the next events and actions of one execution.

    Args:
        state: the execution's folded state; advanced in place by the returned events.
        observations: what the loop saw (time, executor reports, attempts in flight).
        config: retry back-off, the default executor, which executors start at submit.

    Returns:
        The events to append (numbered from ``state.version + 1`` before the call), the actions to
        carry out once they are durable, and the earliest time a timer needs a new round.
    """
    rnd = Round(state, observations, config or PlannerConfig())
    _run(rnd)
    return Plan(rnd.events, rnd.actions, rnd.wake_at, rnd.blobs)


def _run(rnd: Round) -> None:
    state = rnd.state
    if not state.is_terminal:
        if state.phase == "created":
            rnd.emit(ExecutionStarted)
        _observe(rnd)
        _expire_timeouts(rnd)
        _start_retries(rnd)
        while not state.is_terminal and _settle(rnd):
            pass
    if state.is_terminal:
        # a failure found late in the round may follow launches of the same round: those
        # attempts were never handed out, so drop them instead of starting orphans
        rnd.actions = [action for action in rnd.actions if not isinstance(action, Submit)]
    elif rnd.obs.resubmit:
        for node_id in state.active:
            node = state.nodes[node_id]
            key = rnd.key(node)
            if node.phase == "queued" and key not in rnd.obs.in_flight and key not in rnd.submitted:
                rnd.submit(node)
    _cancel_unwanted(rnd)
    if not state.is_terminal and state.marks.deadlines:
        rnd.wake(state.marks.deadlines[0][0])


def _settle(rnd: Round) -> bool:
    """One pass over everything a change can unblock; True if it emitted events."""
    before = len(rnd.events)
    _fail_fast(rnd)
    if rnd.state.is_terminal:
        return False
    _skip_unrunnable(rnd)
    _finish_scopes(rnd)
    if rnd.state.is_terminal:
        return False
    _advance_changed(rnd)
    _launch_ready(rnd)
    return len(rnd.events) > before


def _observe(rnd: Round) -> None:
    state = rnd.state
    for node_id in rnd.obs.cache:
        if node_id in state.arrays:  # the catalog answered a map: look at it again
            state.marks.changed_arrays[node_id] = None
    for key, status in rnd.obs.completions.items():
        node = state.nodes.get(key.node_id)
        if node is None or key.node_id not in state.active or node.attempt != key.attempt:
            continue  # stale report of an attempt that already ended
        if status.phase == "queued" or (status.phase == "running" and node.phase == "running"):
            continue
        if status.phase == "lost":
            # the executor does not know an attempt it was given (its process ended, a worker pool
            # restarted): a system failure, retried on the system budget, never resubmitted blindly
            started = "while it ran" if node.phase == "running" else "before it started"
            error = ErrorInfo(
                kind="system",
                message=f"attempt {node.attempt} was lost by executor {rnd.executor_of(node)!r} {started}",
                retryable=True,
            )
            rnd.emit(NodeFailed, node.node_id, node.attempt, error=error)
            continue
        handler_for(node.spec).observe(rnd, node, status)


def _expire_timeouts(rnd: Round) -> None:
    state = rnd.state
    deadlines = state.marks.deadlines
    while deadlines and deadlines[0][0] <= rnd.now:
        _deadline, node_id, attempt = heapq.heappop(deadlines)
        node = state.nodes[node_id]
        if node_id not in state.active or node.attempt != attempt:
            continue
        deadline = state.deadline_of(node)
        if deadline is not None and deadline > rnd.now:
            continue  # the attempt started late; the entry armed at its start fires later
        error = ErrorInfo(
            kind="timeout",
            message=f"attempt {attempt} did not finish within its timeout of {node.options.timeout:g}s",
            retryable=True,
        )
        rnd.emit(NodeFailed, node_id, attempt, error=error)  # the fold marks the attempt to cancel


def _start_retries(rnd: Round) -> None:
    state = rnd.state
    for node_id in list(state.retrying):
        node = state.nodes[node_id]
        assert node.failed_at is not None
        retry_at = node.failed_at + rnd.config.backoff(node.user_failures + node.system_failures)
        if retry_at > rnd.now:
            rnd.wake(retry_at)
        elif rnd.has_capacity():
            rnd.emit(NodeQueued, node_id, node.attempt + 1)
            rnd.submit(node)


def _fail_fast(rnd: Round) -> None:
    """End every fail_fast scope that had a node fail: the root fails the execution; a nested
    scope fails its owner node at once (its running children are abandoned and cancelled), which
    in turn counts as a failure of the enclosing scope under that scope's own policy."""
    state = rnd.state
    marks = state.marks
    while marks.failed_fast and not state.is_terminal:
        owner = next(iter(marks.failed_fast))
        del marks.failed_fast[owner]
        scope = state.scopes[owner]
        assert scope.failure is not None
        if owner is None:
            rnd.emit(ExecutionFailed, error=scope.failure)
            return
        node = state.nodes[owner]
        if node.phase == "running":
            rnd.emit(NodeFailed, owner, node.attempt, error=rnd.child_failure(scope.failure))


def _skip_unrunnable(rnd: Round) -> None:
    state = rnd.state
    while state.to_skip:
        rnd.emit(NodeSkipped, next(iter(state.to_skip)), reason="an upstream node failed")


def _finish_scopes(rnd: Round) -> None:
    """A scope whose nodes all ended ends its owner: the execution for the root, else the
    subworkflow or dynamic node whose children they are."""
    state = rnd.state
    marks = state.marks
    while marks.finished_scopes and not state.is_terminal:
        owner = next(iter(marks.finished_scopes))
        del marks.finished_scopes[owner]
        scope = state.scopes[owner]
        if owner is None:
            if scope.failure is not None:
                rnd.emit(ExecutionFailed, error=scope.failure)
            else:
                rnd.emit(ExecutionSucceeded, outputs=_inline(rnd, state.scope_outputs(scope)))
            continue
        node = state.nodes[owner]
        if node.phase != "running":
            continue
        if scope.failure is not None:
            rnd.emit(NodeFailed, owner, node.attempt, error=rnd.child_failure(scope.failure))
        else:
            outputs = _inline(rnd, state.scope_outputs(scope))
            rnd.emit(NodeSucceeded, owner, node.attempt, outputs=outputs)
            record_outputs(rnd, node, outputs)  # a cached @dynamic keeps what its children made


def _inline(rnd: Round, outputs: dict[str, bytes]) -> dict[str, bytes]:
    return {name: rnd.inline(literal) for name, literal in outputs.items()}


def _advance_changed(rnd: Round) -> None:
    state = rnd.state
    changed = list(state.marks.changed_arrays)
    state.marks.changed_arrays.clear()
    for node_id in changed:
        if state.is_terminal:
            return
        node = state.nodes[node_id]
        handler_for(node.spec).advance(rnd, node)


def _launch_ready(rnd: Round) -> None:
    state = rnd.state
    for node_id in list(state.ready):
        if state.is_terminal or state.marks.failed_fast:
            return  # a fail_fast scope is about to end; settle it first
        if node_id in state.ready:
            node = state.nodes[node_id]
            handler_for(node.spec).launch(rnd, node)


def _cancel_unwanted(rnd: Round) -> None:
    """Cancel every attempt the fold marked as no longer wanted: timed out, abandoned by its
    ending node or execution, or (in a state folded afresh) any such attempt in the whole log,
    so that a cancel lost in a crash is made again."""
    state = rnd.state
    for unwanted in state.marks.to_cancel:
        node = state.nodes[unwanted.node_id]
        key = rnd.key(node)
        if key.attempt != unwanted.attempt:
            key = type(key)(key.execution_id, key.node_id, unwanted.attempt)
        rnd.actions.append(Cancel(key, unwanted.executor or rnd.executor_of(node), unwanted.handle))
    state.marks.to_cancel.clear()
