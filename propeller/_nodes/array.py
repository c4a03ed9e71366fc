"""Map nodes (``map_task``): split the mapped inputs into elements, run them within ``concurrency``
and ``max_parallelism``, and join their outputs; ``min_success_ratio`` decides when it fails.

The fold keeps a map's elements as counters and arrays (`engine.state.ArrayState`), and marks the
map when an element ends, so that a round costs the elements that moved, not the map's size.
"""

from __future__ import annotations

import math

from engine.events import ArrayExpanded, NodeFailed, NodeQueued, NodeSucceeded
from engine.interfaces import TaskStatus
from engine.literals import NIL_LITERAL, join_list_literal, split_list_literal
from engine.models import ArrayNode, ErrorInfo
from engine.state import NodeState
from propeller._nodes._base import Recovery, observe_leaf, succeed_leaf
from propeller._round import Round

__all__ = ["ArrayHandler"]


class ArrayHandler:
    """The map node itself runs nothing; its elements are leaf attempts routed here too."""

    def launch(self, rnd: Round, node: NodeState) -> bool:
        spec = node.spec
        assert isinstance(spec, ArrayNode) and node.scope is not None
        rnd.emit(NodeQueued, node.node_id, 1)
        sizes = {
            name: len(split_list_literal(rnd.state.resolve(node.scope, spec.inputs[name]))) for name in spec.mapped
        }
        if len(set(sizes.values())) > 1:
            detail = ", ".join(f"{name}={size}" for name, size in sorted(sizes.items()))
            error = ErrorInfo(
                kind="user",
                message=f"map node {node.node_id!r}: mapped inputs have different lengths ({detail}); "
                "pass lists of equal length or bind the shared ones with functools.partial",
                retryable=False,
            )
            rnd.emit(NodeFailed, node.node_id, node.attempt, error=error)
        else:
            rnd.emit(ArrayExpanded, node.node_id, node.attempt, size=next(iter(sizes.values()), 0))
        return True

    def observe(self, rnd: Round, node: NodeState, status: TaskStatus) -> None:
        # ``node`` is an element: it runs like a task
        if observe_leaf(rnd, node, status):
            succeed_leaf(rnd, node, status)

    def advance(self, rnd: Round, node: NodeState) -> None:
        state = rnd.state
        if node.phase != "running":
            return
        spec = node.spec
        assert isinstance(spec, ArrayNode)
        array = state.arrays[node.node_id]
        needed = math.ceil(spec.min_success_ratio * array.size - 1e-9)
        if array.failed > array.size - needed:
            self._fail(rnd, node, needed)
            return
        if array.finished == array.size:
            outputs = join_list_literal(NIL_LITERAL if out is None else out for out in array.outputs)
            rnd.emit(NodeSucceeded, node.node_id, node.attempt, outputs={"o0": outputs})
            return
        limit = spec.concurrency or array.size
        while array.next_index < array.size and array.in_flight < limit:
            if state.marks.failed_fast:
                break  # a fail_fast scope is about to end; settle it first
            if not rnd.has_capacity():
                state.marks.changed_arrays[node.node_id] = None  # looked at again when capacity frees up
                break
            element_id = f"{node.node_id}/{array.next_index}"
            rnd.emit(NodeQueued, element_id, 1)
            rnd.submit(state.nodes[element_id])

    def _fail(self, rnd: Round, node: NodeState, needed: int) -> None:
        array = rnd.state.arrays[node.node_id]
        first = array.first_failure or ErrorInfo(kind="user", message="elements failed")
        error = ErrorInfo(
            kind=first.kind,
            message=(
                f"{array.failed} of {array.size} map elements failed; min_success_ratio needs {needed} "
                f"to succeed. First failure ({first.node_id or 'element'}): {first.message}"
            ),
            traceback=first.traceback,
            retryable=False,
        )
        rnd.emit(NodeFailed, node.node_id, node.attempt, error=error)  # the fold abandons running elements

    def recover(self, recovery: Recovery, node: NodeState) -> None:
        array = recovery.source.arrays.get(node.node_id)
        if array is None:
            return  # it never expanded: it runs again
        recovery.emit(NodeQueued, node.node_id, 1)
        recovery.emit(ArrayExpanded, node.node_id, 1, size=array.size)
        for index in range(array.size):
            element = recovery.source.nodes.get(f"{node.node_id}/{index}")
            if element is not None and element.phase == "succeeded":
                recovery.recovered(element)
