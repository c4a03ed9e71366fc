"""Dynamic nodes: run the ``@dynamic`` body on an executor, record the sub-spec it returns
(``DynamicExpanded``), then its nodes run as the node's children (recursion allowed)."""

from __future__ import annotations

import msgspec

from engine.events import DynamicExpanded, NodeFailed, NodeQueued
from engine.interfaces import TaskStatus
from engine.models import ErrorInfo, WorkflowSpec
from engine.state import NodeState
from propeller._cache import release_if_failed
from propeller._nodes._base import Recovery, observe_leaf
from propeller._nodes.task import TaskHandler
from propeller._round import Round

__all__ = ["DynamicHandler"]

_spec_decoder = msgspec.msgpack.Decoder(WorkflowSpec)


class DynamicHandler(TaskHandler):
    """Launched like a task (its request's kind is ``dynamic``); on success open the children's scope."""

    def observe(self, rnd: Round, node: NodeState, status: TaskStatus) -> None:
        if not observe_leaf(rnd, node, status):
            release_if_failed(rnd, node)
            return
        try:
            spec = _spec_decoder.decode(status.dynamic_spec or b"")
        except msgspec.DecodeError as exc:
            error = ErrorInfo(kind="system", message=f"dynamic node returned no valid spec: {exc}", retryable=True)
            rnd.emit(NodeFailed, node.node_id, node.attempt, error=error)
            return
        problem = spec.problem()
        if problem is not None:
            # the planner trusts the specs in the log: one that does not hold together would stop
            # every later round of the execution, so the node fails instead (the compiler never
            # builds one; a worker of another Slipstream version might send one)
            message = (
                f"dynamic node returned a sub-workflow that does not hold together: {problem}; check that "
                "the workers run the same Slipstream version as the engine"
            )
            error = ErrorInfo(kind="system", message=message, retryable=False)
            rnd.emit(NodeFailed, node.node_id, node.attempt, error=error)
            return
        rnd.emit(DynamicExpanded, node.node_id, node.attempt, spec=spec)

    def advance(self, rnd: Round, node: NodeState) -> None:
        return  # its scope's end is handled with every scope's

    def recover(self, recovery: Recovery, node: NodeState) -> None:
        scope = recovery.source.scopes.get(node.node_id)
        if scope is None:
            return  # it never expanded: it runs again
        recovery.emit(NodeQueued, node.node_id, 1)
        recovery.emit(DynamicExpanded, node.node_id, 1, spec=scope.spec)
        recovery.recover_scope(node.node_id)
