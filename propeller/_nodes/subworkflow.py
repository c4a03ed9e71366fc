"""Subworkflow nodes: queueing one opens its workflow as a child scope; it ends with that scope."""

from __future__ import annotations

from engine.events import NodeQueued
from engine.interfaces import TaskStatus
from engine.state import NodeState
from propeller._nodes._base import Recovery
from propeller._round import Round

__all__ = ["SubworkflowHandler"]


class SubworkflowHandler:
    """No attempt of its own: its nodes run under the planner like any others."""

    def launch(self, rnd: Round, node: NodeState) -> bool:
        rnd.emit(NodeQueued, node.node_id, 1)  # the fold opens the child scope
        return True

    def observe(self, rnd: Round, node: NodeState, status: TaskStatus) -> None:
        raise AssertionError(f"subworkflow node {node.node_id!r} runs no attempts to report on")

    def advance(self, rnd: Round, node: NodeState) -> None:
        return  # its scope's end is handled with every scope's

    def recover(self, recovery: Recovery, node: NodeState) -> None:
        if node.node_id in recovery.source.scopes:
            recovery.emit(NodeQueued, node.node_id, 1)
            recovery.recover_scope(node.node_id)
