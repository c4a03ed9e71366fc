"""Recovery: a new execution that reuses every node a previous one finished (DESIGN section 6).

``recovery_events`` is pure: from the folded state of the source execution it builds the opening
events of the new one: ``ExecutionCreated`` (same spec and inputs, ``parent`` = source),
``ExecutionStarted``, then ``NodeRecovered`` for every node that succeeded in the source. Dynamic,
sub-workflow and map nodes that did not finish are re-opened with the source's expansion (the same
sub-spec, the same size) so their finished children and elements are recovered too, and the
dynamic function does not run again. The planner then runs only what is left.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.events import Event, ExecutionCreated, ExecutionStarted, NodeRecovered
from engine.state import ExecutionState, NodeState
from propeller._nodes import handler_for
from propeller._round import next_event

__all__ = ["recovery_events"]


class _Recovery:
    """Builds the events of the recovering execution; node handlers reuse what their kind can."""

    def __init__(self, source: ExecutionState, execution_id: str, now: datetime) -> None:
        self.source = source
        self.target = ExecutionState()
        self.execution_id = execution_id
        self.now = now
        self.events: list[Event] = []

    def emit(self, event_type: type[Event], node_id: str = "", attempt: int = 0, **fields: Any) -> None:
        self.events.append(next_event(self.target, self.execution_id, self.now, event_type, node_id, attempt, **fields))

    def recovered(self, node: NodeState) -> None:
        self.emit(NodeRecovered, node.node_id, 0, source_execution=self.source.execution_id, outputs=node.outputs or {})

    def recover_scope(self, owner: str | None) -> None:
        scope = self.target.scopes[owner]
        for node_spec in scope.spec.nodes:
            node_id = scope.prefix + node_spec.id
            old = self.source.nodes.get(node_id)
            if old is None or node_id not in self.target.ready:
                continue
            if old.phase == "succeeded":
                self.recovered(old)
            else:
                handler_for(node_spec).recover(self, old)


def recovery_events(source: ExecutionState, execution_id: str, now: datetime) -> list[Event]:
    """The opening events of an execution that recovers ``source``.

    Args:
        source: the folded state of the execution to recover (usually failed or aborted).
        execution_id: the new execution's id.
        now: timestamp of the events.

    Returns:
        Events with versions 1..n, valid for a fresh `ExecutionState`.
    """
    created = source.created
    assert created is not None
    recovery = _Recovery(source, execution_id, now)
    recovery.emit(
        ExecutionCreated,
        project=created.project,
        domain=created.domain,
        workflow=created.workflow,
        workflow_version=created.workflow_version,
        spec=created.spec,
        inputs=created.inputs,
        parent=source.execution_id,
    )
    recovery.emit(ExecutionStarted)
    recovery.recover_scope(None)
    return recovery.events
