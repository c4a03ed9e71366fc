"""Task nodes: one attempt at a time on an executor, retried within the node's budgets."""

from __future__ import annotations

from engine.events import NodeQueued
from engine.interfaces import TaskStatus
from engine.state import NodeState
from propeller._cache import ready_to_launch, record_outputs, release_if_failed
from propeller._nodes._base import Recovery, observe_leaf, succeed_leaf
from propeller._round import Round

__all__ = ["TaskHandler"]


class TaskHandler:
    """Queue the task and submit it (after the cache step); record its start and its outputs."""

    def launch(self, rnd: Round, node: NodeState) -> bool:
        if not ready_to_launch(rnd, node) or not rnd.has_capacity():
            return False
        rnd.emit(NodeQueued, node.node_id, node.attempt + 1)
        rnd.submit(node)
        return True

    def observe(self, rnd: Round, node: NodeState, status: TaskStatus) -> None:
        if observe_leaf(rnd, node, status):
            succeed_leaf(rnd, node, status)
            record_outputs(rnd, node, status.outputs)
        else:
            release_if_failed(rnd, node)

    def advance(self, rnd: Round, node: NodeState) -> None:
        return  # a task has no children

    def recover(self, recovery: Recovery, node: NodeState) -> None:
        return  # an unfinished task runs again
