"""Reading an execution's values back: typed where the code is importable, plain values otherwise.

A person reading outputs from another process (the CLI, a notebook, a dashboard) often cannot or
should not import the workflow's code. So every value decodes two ways: as the Python type the
task or workflow declared (when its module imports here), and as plain JSON-like values, which
always works because literals are msgpack (a pickled leaf reads as a placeholder naming its size).
"""

from __future__ import annotations

import importlib
from typing import Any

import msgspec

from engine._array_state import PHASE_NAMES, SUCCEEDED
from engine._literals import PICKLE_EXT_CODE, from_literal
from engine.errors import ConfigError, NodeNotFound, OutputsNotReady
from engine.events import ExecutionCreated
from engine.literals import BLOB_REF, ITEM_REF, MANIFEST
from engine.models import ArrayNode, TaskRef
from engine.runtime import can_load, load_task
from engine.state import ExecutionState

__all__ = ["node_literals", "plain_outputs", "plain_value", "typed_node_outputs", "typed_workflow_outputs"]


def plain_value(literal: bytes) -> Any:
    """A literal as plain values (dicts, lists, str, numbers, None), without any code of the task."""

    def ext_hook(code: int, data: memoryview) -> Any:
        if code == PICKLE_EXT_CODE:
            return f"<pickled object, {len(data)} bytes>"
        if code in (BLOB_REF, MANIFEST, ITEM_REF):  # resolve references first to see the value
            return "<in the blob store>"
        return f"<extension {code}, {len(data)} bytes>"

    return msgspec.msgpack.decode(literal, ext_hook=ext_hook)


def _single_or_dict(values: dict[str, Any]) -> Any:
    if not values:
        return None
    return values["o0"] if list(values) == ["o0"] else values


def plain_outputs(literals: dict[str, bytes]) -> Any:
    """Outputs as plain values: the value of a single output ``o0``, else a dict by name."""
    return _single_or_dict({name: plain_value(literal) for name, literal in literals.items()})


def workflow_of(created: ExecutionCreated) -> Any:
    """The `Workflow` of an execution, when its module can be imported here; else None.

    (Recognised by its ``decode_outputs``: importing `Workflow` here would make a file cycle,
    since calling a workflow runs an engine.)
    """
    if created.workflow_ref is None:
        return None
    module_name, _, qualname = created.workflow_ref.partition(":")
    if module_name in ("__main__", "__mp_main__") or "<locals>" in qualname:
        return None
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    is_workflow = callable(getattr(obj, "decode_outputs", None)) and getattr(obj, "name", None) == created.workflow
    return obj if is_workflow else None


def typed_workflow_outputs(created: ExecutionCreated, literals: dict[str, bytes]) -> Any:
    """The workflow's outputs as it returns them when its code imports here, else plain values."""
    workflow = workflow_of(created)
    if workflow is None:
        return plain_outputs(literals)
    return workflow.decode_outputs(literals)


def node_literals(state: ExecutionState, node_id: str) -> dict[str, bytes]:
    """The output literals of a node, or of one map element (``<map node>/<index>``).

    Raises:
        NodeNotFound: no such node or element.
        OutputsNotReady: the node or element has not succeeded.
    """
    node = state.nodes.get(node_id)
    if node is None:
        parent, _, index = node_id.rpartition("/")
        array = state.arrays.get(parent)
        if array is None or not index.isdigit() or int(index) >= array.size:
            raise NodeNotFound(state.execution_id, node_id)
        phase, output = array.phases[int(index)], array.outputs[int(index)]
        if phase != SUCCEEDED or output is None:
            raise OutputsNotReady(state.execution_id, node_id, PHASE_NAMES[phase])
        return {"o0": output}
    if node.outputs is None:
        raise OutputsNotReady(state.execution_id, node_id, node.phase)
    return node.outputs


def typed_node_outputs(state: ExecutionState, node_id: str, literals: dict[str, bytes]) -> Any:
    """A node's outputs typed from its task's interface when the task imports here, else plain."""
    node = state.nodes.get(node_id)
    spec = node.spec if node is not None else state.nodes[node_id.rpartition("/")[0]].spec
    ref: TaskRef | None = getattr(spec, "task", None)
    if ref is None or not can_load(ref):
        return plain_outputs(literals)
    try:
        task = load_task(ref)
    except ConfigError:
        return plain_outputs(literals)
    types = dict(task.interface.outputs)
    whole_map = node is not None and isinstance(spec, ArrayNode)
    values = {}
    for name, literal in literals.items():
        tp = types.get(name)
        if tp is None:
            values[name] = plain_value(literal)
        else:
            values[name] = from_literal(literal, list[tp | None] if whole_map else tp)  # type: ignore[valid-type]
    return _single_or_dict(values)
