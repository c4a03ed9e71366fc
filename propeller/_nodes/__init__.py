"""Node handlers: one module per node kind, after flytepropeller's ``nodes/<kind>/handler.go``.

A handler says what its kind does when the node is ready (`launch`), when an executor reports on
one of its attempts (`observe`), when its children moved (`advance`), and how a recovered
execution reuses it (`recover`). The planner routes to handlers through `handler_for`; nothing else
in the control loop tests node kinds, so a new kind is a handler module plus its spec.
"""

from __future__ import annotations

from engine.models import ArrayNode, DynamicNode, NodeSpec, SubworkflowNode, TaskNode
from propeller._nodes._base import NodeHandler, Recovery
from propeller._nodes.array import ArrayHandler
from propeller._nodes.dynamic import DynamicHandler
from propeller._nodes.subworkflow import SubworkflowHandler
from propeller._nodes.task import TaskHandler

__all__ = ["NodeHandler", "Recovery", "handler_for"]

_HANDLERS: dict[type, NodeHandler] = {
    TaskNode: TaskHandler(),
    DynamicNode: DynamicHandler(),
    ArrayNode: ArrayHandler(),
    SubworkflowNode: SubworkflowHandler(),
}


def handler_for(spec: NodeSpec) -> NodeHandler:
    """The handler of a node (for a map element: of its map, whose spec it carries)."""
    handler = _HANDLERS.get(type(spec))
    if handler is None:
        raise TypeError(f"no node handler for {type(spec).__name__}: add one under propeller/_nodes/")
    return handler
