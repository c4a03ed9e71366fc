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

from engine.events import (
    ArrayExpanded,
    DynamicExpanded,
    Event,
    ExecutionCreated,
    ExecutionStarted,
    NodeQueued,
    NodeRecovered,
)
from engine.models import ArrayNode, DynamicNode, SubworkflowNode
from engine.state import ExecutionState, NodeState
from propeller._planner import next_event

__all__ = ["recovery_events"]


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
    target = ExecutionState()
    events: list[Event] = []

    def emit(event_type: type[Event], node_id: str = "", attempt: int = 0, **fields: Any) -> None:
        events.append(next_event(target, execution_id, now, event_type, node_id, attempt, **fields))

    emit(
        ExecutionCreated,
        project=created.project,
        domain=created.domain,
        workflow=created.workflow,
        workflow_version=created.workflow_version,
        spec=created.spec,
        inputs=created.inputs,
        parent=source.execution_id,
    )
    emit(ExecutionStarted)

    def recovered(node: NodeState) -> None:
        emit(NodeRecovered, node.node_id, 0, source_execution=source.execution_id, outputs=node.outputs or {})

    def recover_scope(owner: str | None) -> None:
        scope = target.scopes[owner]
        for node_spec in scope.spec.nodes:
            node_id = scope.prefix + node_spec.id
            old = source.nodes.get(node_id)
            if old is None or node_id not in target.ready:
                continue
            if old.phase == "succeeded":
                recovered(old)
            elif isinstance(node_spec, DynamicNode) and node_id in source.scopes:
                emit(NodeQueued, node_id, 1)
                emit(DynamicExpanded, node_id, 1, spec=source.scopes[node_id].spec)
                recover_scope(node_id)
            elif isinstance(node_spec, SubworkflowNode) and node_id in source.scopes:
                emit(NodeQueued, node_id, 1)
                recover_scope(node_id)
            elif isinstance(node_spec, ArrayNode) and node_id in source.arrays:
                emit(NodeQueued, node_id, 1)
                emit(ArrayExpanded, node_id, 1, size=source.arrays[node_id].size)
                for index in range(source.arrays[node_id].size):
                    element = source.nodes.get(f"{node_id}/{index}")
                    if element is not None and element.phase == "succeeded":
                        recovered(element)

    recover_scope(None)
    return events
