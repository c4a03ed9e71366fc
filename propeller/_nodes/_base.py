"""The `NodeHandler` protocol and the helpers every leaf kind shares."""

from __future__ import annotations

from typing import Protocol

from engine.events import NodeFailed, NodeSucceeded
from engine.interfaces import TaskStatus
from engine.models import ErrorInfo
from engine.state import ExecutionState, NodeState
from propeller._round import Round

__all__ = ["NodeHandler", "Recovery", "observe_leaf"]


class Recovery(Protocol):
    """What a handler may do while a recovered execution copies what its source finished."""

    source: ExecutionState
    target: ExecutionState

    def emit(self, event_type: type, node_id: str = "", attempt: int = 0, **fields: object) -> None: ...

    def recovered(self, node: NodeState) -> None:
        """Record ``NodeRecovered`` for a node that succeeded in the source."""
        ...

    def recover_scope(self, owner: str | None) -> None:
        """Recover the nodes of the scope ``owner`` opened in the target."""
        ...


class NodeHandler(Protocol):
    """The behaviour of one node kind inside a planning round (pure: it only uses ``rnd``)."""

    def launch(self, rnd: Round, node: NodeState) -> bool:
        """The node is ready: start it. Returns False if it must wait for capacity (it stays ready)."""
        ...

    def observe(self, rnd: Round, node: NodeState, status: TaskStatus) -> None:
        """An executor reported ``status`` (running, succeeded or failed) on the node's current attempt."""
        ...

    def advance(self, rnd: Round, node: NodeState) -> None:
        """The node's children changed (a map's elements): move it on."""
        ...

    def recover(self, recovery: Recovery, node: NodeState) -> None:
        """The node did not succeed in the source execution: reuse what of it did."""
        ...


def observe_leaf(rnd: Round, node: NodeState, status: TaskStatus) -> bool:
    """Record a report on a leaf attempt: its start, then its failure. Returns True when it
    succeeded, leaving the success to the caller (a task records outputs, a dynamic expands)."""
    if node.phase == "queued":
        rnd.record_start(node, status)
    if status.phase == "failed":
        error = status.error or ErrorInfo(kind="system", message="executor reported no error")
        rnd.emit(NodeFailed, node.node_id, node.attempt, error=error, logs=status.logs)
    return status.phase == "succeeded"


def succeed_leaf(rnd: Round, node: NodeState, status: TaskStatus) -> None:
    rnd.emit(NodeSucceeded, node.node_id, node.attempt, outputs=status.outputs, logs=status.logs)
