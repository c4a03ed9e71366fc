"""What `Engine.get` and `Engine.watch` report: an execution's progress, projected from its state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from engine.models import ErrorInfo
from engine.state import FAILED, ArrayState, ExecutionState

__all__ = ["FAILED_ELEMENTS_SHOWN", "ExecutionDetails", "NodeDetails", "details_of"]

FAILED_ELEMENTS_SHOWN = 20  # a map's failed elements listed with their errors; the rest are counted


@dataclass(frozen=True)
class NodeDetails:
    """One node's progress, as `Engine.get` reports it."""

    node_id: str
    phase: str
    attempt: int
    error: ErrorInfo | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    source: str = ""
    # map nodes only: how many elements there are and how far they got
    size: int | None = None
    succeeded: int = 0
    failed: int = 0
    running: int = 0  # elements queued or running (retrying ones not included)
    retrying: int = 0  # elements waiting for their next attempt
    # the first failed elements (index -> error), up to `FAILED_ELEMENTS_SHOWN`
    failed_elements: dict[int, ErrorInfo] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutionDetails:
    """An execution's summary and per-node progress, folded from its events."""

    execution_id: str
    workflow: str
    status: str
    project: str
    domain: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: ErrorInfo | None
    parent: str | None
    version: int
    nodes: list[NodeDetails] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Nodes per phase (map elements are summed up by their map node's ``size``/``succeeded``/...)."""
        result: dict[str, int] = {}
        for node in self.nodes:
            result[node.phase] = result.get(node.phase, 0) + 1
        return result


def _failed_elements(array: ArrayState) -> dict[int, ErrorInfo]:
    """The first failed elements with their errors (errors are kept only for failed and
    retrying elements, so this looks at few entries)."""
    failed = sorted(index for index, _ in array.errors.items() if array.phases[index] == FAILED)
    return {index: array.errors[index] for index in failed[:FAILED_ELEMENTS_SHOWN]}


def details_of(state: ExecutionState) -> ExecutionDetails:
    """Project a folded state for display (pure)."""
    created = state.created
    assert created is not None
    status = {"created": "created", "running": "running"}.get(state.phase, state.phase)
    nodes = []
    for node in state.nodes.values():
        if node.array_parent is not None:
            continue  # a 100k-element map is one row with counters, not 100k rows
        array = state.arrays.get(node.node_id)
        nodes.append(
            NodeDetails(
                node_id=node.node_id,
                phase=node.phase,
                attempt=node.attempt,
                error=node.error,
                started_at=node.started_at or node.queued_at,
                finished_at=node.finished_at,
                source=node.source,
                size=array.size if array else None,
                succeeded=array.succeeded if array else 0,
                failed=array.failed if array else 0,
                running=array.in_flight - len(array.retrying) if array else 0,
                retrying=len(array.retrying) if array else 0,
                failed_elements=_failed_elements(array) if array else {},
            )
        )
    return ExecutionDetails(
        execution_id=state.execution_id,
        workflow=created.workflow,
        status=status,
        project=created.project,
        domain=created.domain,
        created_at=created.at,
        started_at=state.started_at,
        finished_at=state.finished_at,
        error=state.error,
        parent=created.parent,
        version=state.version,
        nodes=nodes,
    )
