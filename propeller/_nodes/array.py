"""Map nodes (``map_task``): split the mapped inputs into elements, run them in chunks within
``concurrency`` and ``max_parallelism``, and join their outputs; ``min_success_ratio`` decides when
the map fails.

Elements go to executors in chunks (``ChunkQueued``): one job runs many elements and reports one
result each (``ChunkFinished``), so a map's log holds a few events per chunk, not three per element.
Chunks start small and grow while elements are fast (``PlannerConfig.chunk_seconds``); a task with
a timeout runs one element per chunk, since a timeout cancels one attempt. Each element keeps its
own attempts and retry budgets. Logs written before chunks (one ``NodeQueued`` per element) still
fold, and their elements in flight finish the old way.
"""

from __future__ import annotations

import math

from engine.events import (
    ArrayExpanded,
    ChunkFinished,
    ChunkQueued,
    ElementResult,
    ElementsReused,
    NodeFailed,
    NodeQueued,
    NodeSucceeded,
)
from engine.interfaces import TaskStatus
from engine.literals import NIL_LITERAL, join_list_literal, split_list_literal
from engine.models import ArrayNode, ErrorInfo
from engine.state import SUCCEEDED, WAITING, ArrayState, NodeState
from propeller._cache import map_lookup, record_elements
from propeller._nodes._base import Recovery, observe_leaf, succeed_leaf
from propeller._round import Round

__all__ = ["ArrayHandler"]

_REUSED_PER_EVENT = 10_000  # recovered elements per ElementsReused event


class ArrayHandler:
    """The map node itself runs nothing; its chunks (and legacy elements) are routed here too."""

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
        if node.chunk is None:  # an element of a log written before chunks: it runs like a task
            if observe_leaf(rnd, node, status):
                succeed_leaf(rnd, node, status)
            return
        if not observe_leaf(rnd, node, status):
            return
        results = {result.index: result for result in status.elements}
        chunk = node.chunk
        missing = ErrorInfo(kind="system", message="the executor reported no result for this element", retryable=True)
        own = [
            _own(results.get(index), index, attempt, missing)
            for index, attempt in zip(chunk.elements, chunk.attempts, strict=True)
        ]
        parent = rnd.state.nodes[node.array_parent or ""]
        array = rnd.state.arrays[parent.node_id]
        rnd.emit(ChunkFinished, node.node_id, node.attempt, results=own)
        record_elements(rnd, parent, array, own)

    def advance(self, rnd: Round, node: NodeState) -> None:
        if node.phase != "running":
            return
        spec = node.spec
        assert isinstance(spec, ArrayNode)
        array = rnd.state.arrays[node.node_id]
        needed = math.ceil(spec.min_success_ratio * array.size - 1e-9)
        if array.failed > array.size - needed:
            self._fail(rnd, node, needed)
        elif array.finished == array.size:
            outputs = join_list_literal(NIL_LITERAL if out is None else out for out in array.outputs)
            rnd.emit(NodeSucceeded, node.node_id, node.attempt, outputs={"o0": rnd.inline(outputs)})
        elif map_lookup(rnd, node, array):
            if array.finished == array.size:  # every element came from the cache
                rnd.state.marks.changed_arrays[node.node_id] = None
            else:
                self._launch_chunks(rnd, node, spec, array)

    def _launch_chunks(self, rnd: Round, node: NodeState, spec: ArrayNode, array: ArrayState) -> None:
        state = rnd.state
        retries = self._due_retries(rnd, array)
        if len(retries) < len(array.retrying):
            # some wait for their back-off: look at the map again in the round their timer wakes
            state.marks.changed_arrays[node.node_id] = None
        while retries or array.next_index < array.size:
            if state.marks.failed_fast:
                return  # a fail_fast scope is about to end; settle it first
            room = self._room(rnd, spec, array)
            if room <= 0:
                if rnd.capacity() == 0:
                    state.marks.changed_arrays[node.node_id] = None  # looked at again when capacity frees up
                return
            size = min(room, self._chunk_size(rnd, spec, array))
            elements = retries[:size]
            del retries[:size]
            attempts = [array.attempts[index] + 1 for index in elements]
            index = array.next_index
            while len(elements) < size and index < array.size:
                if array.phases[index] == WAITING:
                    elements.append(index)
                    attempts.append(1)
                index += 1
            if not elements:
                return
            chunk_id = f"{node.node_id}/c{array.chunks + 1}"
            rnd.emit(ChunkQueued, chunk_id, 1, elements=elements, attempts=attempts)
            rnd.submit(state.nodes[chunk_id])

    @staticmethod
    def _due_retries(rnd: Round, array: ArrayState) -> list[int]:
        due: list[int] = []
        for index, failed_at in array.retrying.items():
            retry_at = failed_at + rnd.config.backoff(array.failures(index))
            if retry_at <= rnd.now:
                due.append(index)
            else:
                rnd.wake(retry_at)
        return due

    @staticmethod
    def _room(rnd: Round, spec: ArrayNode, array: ArrayState) -> int:
        """How many more elements may go out now."""
        if spec.concurrency is not None:
            room = spec.concurrency - (array.in_flight - len(array.retrying))
        elif array.open_chunks >= rnd.config.map_chunks_in_flight:
            room = 0
        else:
            room = array.size
        capacity = rnd.capacity()
        return room if capacity is None else min(room, capacity)

    @staticmethod
    def _chunk_size(rnd: Round, spec: ArrayNode, array: ArrayState) -> int:
        """Small while elements are slow or few, large while they are fast."""
        config = rnd.config
        if spec.options.timeout is not None:
            return 1  # a timeout cancels one attempt: one element per job
        waiting = array.size - array.next_index
        slots = spec.concurrency or config.map_chunks_in_flight
        spread = max(1, math.ceil(waiting / slots))  # enough chunks for every slot
        if array.element_seconds is None:
            return min(spread, config.first_chunk_max)
        fits = int(config.chunk_seconds / max(array.element_seconds, 1e-9))
        return max(1, min(fits, spread, config.chunk_max))

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
        rnd.emit(NodeFailed, node.node_id, node.attempt, error=error)  # the fold abandons running chunks

    def recover(self, recovery: Recovery, node: NodeState) -> None:
        array = recovery.source.arrays.get(node.node_id)
        if array is None:
            return  # it never expanded: it runs again
        recovery.emit(NodeQueued, node.node_id, 1)
        recovery.emit(ArrayExpanded, node.node_id, 1, size=array.size)
        done = [i for i in range(array.size) if array.phases[i] == SUCCEEDED]
        for start in range(0, len(done), _REUSED_PER_EVENT):
            results = [ElementResult(i, 0, array.outputs[i]) for i in done[start : start + _REUSED_PER_EVENT]]
            recovery.emit(
                ElementsReused, node.node_id, 0, source=f"recovered:{recovery.source.execution_id}", results=results
            )


def _own(result: ElementResult | None, index: int, attempt: int, missing: ErrorInfo) -> ElementResult:
    """The executor's result for the element, or a system failure when it gave none."""
    if result is None or result.attempt != attempt:
        return ElementResult(index, attempt, error=missing)
    return result
