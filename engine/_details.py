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
    phase: str  # "cancelled" for one that was queued or running when the execution ended
    attempt: int
    error: ErrorInfo | None = None
    started_at: datetime | None = None  # the current attempt's start (None while it is queued)
    finished_at: datetime | None = None
    source: str = ""
    task: str = ""  # the task's name ("" for a sub-workflow)
    queued_at: datetime | None = None
    retries: int = 0  # failed attempts so far (user and system)
    # map nodes only: how many elements there are and how far they got
    size: int | None = None
    succeeded: int = 0
    failed: int = 0
    running: int = 0  # elements whose chunk runs
    retrying: int = 0  # elements waiting for their next attempt
    queued: int = 0  # elements handed to an executor that has not started them
    cancelled: int = 0  # elements in flight when the execution ended
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
    ended = state.is_terminal
    running_elements: dict[str, int] = {}  # map node -> elements of its chunks that run
    for node in state.nodes.values():
        if node.chunk is not None and node.phase == "running" and node.array_parent is not None:
            running_elements[node.array_parent] = running_elements.get(node.array_parent, 0) + len(node.chunk.elements)
    nodes = []
    for node in state.nodes.values():
        if node.array_parent is not None:
            continue  # a 100k-element map is one row with counters, not 100k rows
        array = state.arrays.get(node.node_id)
        in_flight = array.in_flight - len(array.retrying) if array else 0
        running = min(running_elements.get(node.node_id, 0), in_flight)
        nodes.append(
            NodeDetails(
                node_id=node.node_id,
                phase="cancelled" if ended and node.phase in ("queued", "running") else node.phase,
                attempt=node.attempt,
                error=node.error,
                started_at=node.started_at,
                finished_at=node.finished_at,
                source=node.source,
                task=node.spec.task.name if hasattr(node.spec, "task") else "",
                queued_at=node.queued_at,
                retries=node.user_failures + node.system_failures,
                size=array.size if array else None,
                succeeded=array.succeeded if array else 0,
                failed=array.failed if array else 0,
                running=0 if ended else running,
                retrying=0 if ended else len(array.retrying) if array else 0,
                queued=0 if ended else in_flight - running,
                cancelled=in_flight + (len(array.retrying) if array else 0) if ended else 0,
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
