"""The state of an execution as a fold of its events: ``ExecutionState.apply(event) -> ExecutionState``.

The fold is deterministic and does no I/O, but it is not copy-on-write: ``apply`` mutates and
returns the same object, so one event costs O(1) amortised however wide the execution is (a
100k-element map must not be copied per event). Whoever keeps a state and fails to persist events
applied to it must throw the state away and fold again from the log.

Besides the per-node view, the fold keeps the indexes the planner needs so that a round costs what
changed, not the size of the execution: ``ready`` (nodes whose inputs are all available),
``to_skip`` (nodes an upstream failure made unrunnable), ``active`` (attempts handed to an
executor) and ``retrying``. These are state: a state kept by the loop and a state folded afresh
from the same log are equal, indexes included.

``marks`` is not state: it is the fold's list of what changed since the planner last looked (scopes
that finished or failed fast, maps whose elements moved, timeout deadlines, attempts the log no
longer wants). The planner drains it, and its handling of each mark is idempotent, so a state
folded afresh (which marks everything again) plans the same round. That is how cancels survive a
crash between an append and the cancel it called for: the next fold marks the attempt again.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NoReturn

import msgspec

from engine._array_state import FAILED, IN_FLIGHT, RETRYING, SUCCEEDED, WAITING, ArrayState, ChunkState
from engine.errors import InvalidTransition
from engine.events import (
    AnyEvent,
    ArrayExpanded,
    ChunkFinished,
    ChunkQueued,
    DynamicExpanded,
    ElementsReused,
    ExecutionAborted,
    ExecutionCreated,
    ExecutionFailed,
    ExecutionStarted,
    ExecutionSucceeded,
    NodeCacheHit,
    NodeFailed,
    NodeQueued,
    NodeRecovered,
    NodeRunning,
    NodeSkipped,
    NodeSucceeded,
)
from engine.interfaces import TERMINAL_STATUSES
from engine.literals import join_dict_literal, join_list_literal, split_list_literal
from engine.models import (
    ArrayNode,
    Binding,
    DictBinding,
    DynamicNode,
    ErrorInfo,
    FailurePolicy,
    InputBinding,
    ListBinding,
    LiteralBinding,
    NodeSpec,
    OutputRef,
    SubworkflowNode,
    TaskOptions,
    WorkflowSpec,
)

__all__ = [
    "FAILED",
    "IN_FLIGHT",
    "RETRYING",
    "SUCCEEDED",
    "WAITING",
    "ArrayState",
    "ChunkState",
    "ExecutionState",
    "NodePhase",
    "NodeState",
    "PlannerMarks",
    "Scope",
    "UnwantedAttempt",
    "binding_dependencies",
    "binding_leaves",
]

ExecutionPhase = Literal["pending", "created", "running", "succeeded", "failed", "aborted"]
NodePhase = Literal[
    "waiting",  # not started; maybe ready (see ExecutionState.ready)
    "queued",  # an attempt was handed to an executor
    "running",  # the executor started it (task), or children run (dynamic/array/subworkflow)
    "retrying",  # an attempt failed; the next one waits for its back-off
    "succeeded",
    "failed",
    "skipped",
]

def binding_leaves(binding: Binding) -> Iterator[Binding]:
    """The bindings inside ``binding`` that are not lists or dicts of others."""
    match binding:
        case ListBinding(items=items):
            for item in items:
                yield from binding_leaves(item)
        case DictBinding(items=items):
            for item in items.values():
                yield from binding_leaves(item)
        case _:
            yield binding


def binding_dependencies(binding: Binding) -> Iterator[str]:
    """The sibling node ids a binding reads outputs from."""
    return (leaf.node for leaf in binding_leaves(binding) if isinstance(leaf, OutputRef))


@dataclass(slots=True, eq=False)
class Scope:
    """The nodes of one workflow body: the root, a subworkflow's or a dynamic node's children."""

    prefix: str  # "" for the root, "<owner id>/" for children
    owner: str | None  # the dynamic or subworkflow node whose children these are
    spec: WorkflowSpec
    inputs: dict[str, bytes]
    unfinished: int
    pending_deps: dict[str, int]  # local id -> dependencies not yet succeeded
    dependents: dict[str, list[str]]  # local id -> local ids reading its outputs
    # a workflow's own policy; a dynamic node's children follow the scope the dynamic node is in
    policy: FailurePolicy = "fail_fast"
    failure: ErrorInfo | None = None  # the first final failure among its nodes


@dataclass(slots=True, eq=False)
class NodeState:
    """One node's (or map element's) progress."""

    node_id: str
    spec: NodeSpec  # for a map element: the map node's spec
    scope: Scope | None  # None for map elements
    array_parent: str | None = None
    phase: NodePhase = "waiting"
    attempt: int = 0
    user_failures: int = 0
    system_failures: int = 0
    outputs: dict[str, bytes] | None = None
    error: ErrorInfo | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failed_at: datetime | None = None
    executor: str = ""
    worker: str = ""
    gpu_ids: tuple[str, ...] = ()
    handle: str = ""  # the executor's durable id of the current attempt, once it started
    source: str = ""  # "cache:<artifact>" or "recovered:<execution id>"
    chunk: ChunkState | None = None  # a chunk of map elements (node id `<map>/c<n>`)

    @property
    def options(self) -> TaskOptions:
        return self.spec.options

    @property
    def is_leaf(self) -> bool:
        """Whether attempts of this node run on an executor (task, map element, dynamic before expansion)."""
        return self.array_parent is not None or self.spec.runs_attempts

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.node_id,
            self.phase,
            self.attempt,
            self.user_failures,
            self.system_failures,
            self.outputs,
            self.error,
            self.queued_at,
            self.started_at,
            self.finished_at,
            self.executor,
            self.worker,
            self.gpu_ids,
            self.handle,
            self.source,
            None if self.chunk is None else (tuple(self.chunk.elements), tuple(self.chunk.attempts)),
        )


@dataclass(frozen=True, slots=True)
class UnwantedAttempt:
    """An attempt the log no longer wants (timed out, or its node or execution ended without it)
    that may still run on its executor: the loop cancels it, after a restart too."""

    node_id: str
    attempt: int
    executor: str  # "" when it never started: the node's configured executor
    handle: str


@dataclass(slots=True, eq=False)
class PlannerMarks:
    """What changed since the planner last looked; drained by the planner, not part of the state.

    Insertion-ordered sets (``dict[key, None]``) and a timer heap with lazy deletion.
    """

    # fail_fast scopes (by owner; None: the root) that had a node fail: the planner ends them
    failed_fast: dict[str | None, None] = field(default_factory=dict)
    finished_scopes: dict[str | None, None] = field(default_factory=dict)
    changed_arrays: dict[str, None] = field(default_factory=dict)
    # (deadline, node id, attempt) of attempts with a timeout; stale entries are skipped on pop
    deadlines: list[tuple[datetime, str, int]] = field(default_factory=list)
    to_cancel: list[UnwantedAttempt] = field(default_factory=list)

    def clear(self) -> None:
        """Forget what a terminal event made moot (cancels stay: they are still owed)."""
        self.failed_fast.clear()
        self.finished_scopes.clear()
        self.changed_arrays.clear()
        self.deadlines.clear()


class ExecutionState:
    """The fold of one execution's events. Build with ``ExecutionState.fold(events)``."""

    def __init__(self) -> None:
        self.execution_id = ""
        self.version = 0
        self.phase: ExecutionPhase = "pending"
        self.created: ExecutionCreated | None = None
        self.outputs: dict[str, bytes] | None = None
        self.error: ErrorInfo | None = None
        self.abort_reason = ""
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.nodes: dict[str, NodeState] = {}
        self.scopes: dict[str | None, Scope] = {}  # owner node id (None: root) -> scope
        self.arrays: dict[str, ArrayState] = {}
        # planner indexes (insertion-ordered sets: dict[str, None]) -------------------------------
        self.ready: dict[str, None] = {}
        self.to_skip: dict[str, None] = {}
        self.active: dict[str, None] = {}  # leaf attempts queued or running
        self.retrying: dict[str, None] = {}
        # elements in open chunks beyond one per chunk: `active` holds a chunk once, but
        # max_parallelism counts its elements
        self.chunked_elements = 0
        self.failures: list[ErrorInfo] = []  # final node failures, in order
        self.marks = PlannerMarks()

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def fold(cls, events: Iterable[AnyEvent], state: ExecutionState | None = None) -> ExecutionState:
        """Apply ``events`` in order to ``state`` (a new one if ``None``) and return it."""
        state = state if state is not None else cls()
        for event in events:
            state.apply(event)
        return state

    @property
    def is_terminal(self) -> bool:
        return self.phase in TERMINAL_STATUSES

    @property
    def spec(self) -> WorkflowSpec:
        assert self.created is not None
        return self.created.spec

    def snapshot(self) -> tuple[object, ...]:
        """A comparable summary of everything the fold derived, ``marks`` excepted (for tests and
        replay checks: a kept state must equal the state folded afresh from the same log)."""
        return (
            self.execution_id,
            self.version,
            self.phase,
            self.outputs,
            self.error,
            self.abort_reason,
            self.started_at,
            self.finished_at,
            tuple(sorted(node.snapshot() for node in self.nodes.values())),
            tuple(
                (owner or "", scope.prefix, scope.unfinished, tuple(sorted(scope.pending_deps.items())), scope.failure)
                for owner, scope in sorted(self.scopes.items(), key=lambda item: item[0] or "")
            ),
            tuple(sorted(self.ready)),
            tuple(sorted(self.active)),
            tuple(sorted(self.retrying)),
            tuple(sorted(self.to_skip)),
            self.chunked_elements,
            tuple(self.failures),
            tuple((key, array.snapshot()) for key, array in sorted(self.arrays.items())),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExecutionState) and self.snapshot() == other.snapshot()

    __hash__ = None  # type: ignore[assignment]

    # -- the fold ------------------------------------------------------------------------------------

    def apply(self, event: AnyEvent) -> ExecutionState:
        """Advance the state by one event.

        Raises:
            InvalidTransition: the event cannot follow the current state (wrong version, unknown
                node or event kind, a node event in the wrong phase, anything after a terminal event).
        """
        handler = _APPLY.get(type(event))
        if handler is None:
            self._invalid(event, "unknown event kind")
        if isinstance(event, ExecutionCreated):
            if self.phase != "pending":
                self._invalid(event, "the execution already exists")
        elif self.phase == "pending":
            self._invalid(event, "the execution was never created")
        elif self.is_terminal:
            self._invalid(event, f"the execution already {self.phase}")
        if event.version != self.version + 1:
            self._invalid(event, f"expected version {self.version + 1}")
        handler(self, event)  # type: ignore[misc]
        self.version = event.version
        return self

    def _on_created(self, event: ExecutionCreated) -> None:
        self.execution_id = event.execution_id
        self.created = event
        self.phase = "created"
        self._open_scope(None, "", event.spec, event.inputs)

    def _on_started(self, event: ExecutionStarted) -> None:
        if self.phase != "created":
            self._invalid(event, "the execution already started")
        self.phase = "running"
        self.started_at = event.at

    def _on_succeeded(self, event: ExecutionSucceeded) -> None:
        self.phase = "succeeded"
        self.outputs = dict(event.outputs)
        self._close(event.at)

    def _on_failed(self, event: ExecutionFailed) -> None:
        self.phase = "failed"
        self.error = event.error
        self._close(event.at)

    def _on_aborted(self, event: ExecutionAborted) -> None:
        self.phase = "aborted"
        self.abort_reason = event.reason
        self._close(event.at)

    def _on_node_queued(self, event: NodeQueued) -> None:
        node = self._node(event)
        if node.phase == "retrying":
            self.retrying.pop(node.node_id, None)
        elif node.phase != "waiting":
            self._invalid(event, f"node is {node.phase}")
        elif node.scope is not None and node.node_id not in self.ready:
            self._invalid(event, "its inputs are not ready")
        if event.attempt != node.attempt + 1:
            self._invalid(event, f"attempt {event.attempt} does not follow attempt {node.attempt}")
        if node.phase == "waiting" and node.array_parent is not None:
            self._claim_element(node)
        self.ready.pop(node.node_id, None)
        node.phase = "queued"
        node.attempt = event.attempt
        node.queued_at = event.at
        node.started_at = None
        node.executor = node.worker = node.handle = ""
        node.gpu_ids = ()
        spec = node.spec
        if isinstance(spec, SubworkflowNode):
            assert node.scope is not None
            node.phase = "running"
            inputs = {name: self.resolve(node.scope, b) for name, b in spec.inputs.items()}
            self._open_scope(node.node_id, node.node_id + "/", self.spec_of_subworkflow(spec.workflow), inputs)
        elif node.is_leaf:
            self.active[node.node_id] = None
            self._push_deadline(node, event.at)

    def _on_node_running(self, event: NodeRunning) -> None:
        node = self._attempt_node(event, ("queued",))
        node.phase = "running"
        node.started_at = event.at
        node.executor = event.executor
        node.worker = event.worker
        node.gpu_ids = tuple(event.gpu_ids)
        node.handle = event.handle
        self._push_deadline(node, event.at)

    def _on_node_succeeded(self, event: NodeSucceeded) -> None:
        node = self._node(event)
        if node.chunk is not None:
            self._invalid(event, "a chunk ends with ChunkFinished")
        if self._is_composite(node):
            if node.phase != "running" or not (node.node_id in self.scopes or node.node_id in self.arrays):
                self._invalid(event, f"node is {node.phase}; its children have not run")
        else:
            self._attempt_node(event, ("queued", "running"))
        self._succeed(node, event.outputs, event.at)

    def _on_node_failed(self, event: NodeFailed) -> None:
        node = self._node(event)
        if node.chunk is not None:
            self._fail_chunk(node, event)
            return
        composite = self._is_composite(node)
        if composite:
            if node.phase not in ("queued", "running"):
                self._invalid(event, f"node is {node.phase}")
        else:
            self._attempt_node(event, ("queued", "running"))
            if event.error.kind == "timeout":
                self._abandon(node)  # the executor may still run it: the loop cancels it
        self.active.pop(node.node_id, None)
        node.error = event.error
        node.failed_at = event.at
        error = event.error
        if error.kind == "system":
            node.system_failures += 1
            budget_left = node.system_failures <= node.options.system_retries
        else:
            node.user_failures += 1
            budget_left = node.user_failures <= node.options.retries
        if error.retryable and budget_left and not composite:
            node.phase = "retrying"
            self.retrying[node.node_id] = None
            return
        node.phase = "failed"
        node.finished_at = event.at
        self._finished(node, success=False)

    def _on_node_skipped(self, event: NodeSkipped) -> None:
        node = self._node(event)
        if node.phase != "waiting":
            self._invalid(event, f"node is {node.phase}; only a node that never started can be skipped")
        node.phase = "skipped"
        node.finished_at = event.at
        self.ready.pop(node.node_id, None)
        self.to_skip.pop(node.node_id, None)
        self._finished(node, success=False)

    def _on_node_reused(self, event: NodeCacheHit | NodeRecovered) -> None:
        node = self._node(event)
        startable = (
            node.phase in ("waiting", "retrying")
            if node.array_parent is not None
            else node.phase == "waiting" and node.node_id in self.ready
        )
        if not startable:
            self._invalid(event, f"node is {node.phase} or its inputs are not ready")
        self.retrying.pop(node.node_id, None)
        self.ready.pop(node.node_id, None)
        node.source = (
            f"cache:{event.artifact}" if isinstance(event, NodeCacheHit) else f"recovered:{event.source_execution}"
        )
        if node.array_parent is not None and node.phase == "waiting":
            self._claim_element(node)
        self._succeed(node, event.outputs, event.at)

    def _on_dynamic_expanded(self, event: DynamicExpanded) -> None:
        node = self._node(event)
        if not isinstance(node.spec, DynamicNode) or node.phase not in ("queued", "running"):
            self._invalid(event, "only a queued or running dynamic node can expand")
        if event.attempt != node.attempt:
            self._invalid(event, f"attempt {event.attempt} is not the current attempt {node.attempt}")
        node.phase = "running"
        node.started_at = node.started_at or event.at
        self.active.pop(node.node_id, None)
        assert node.scope is not None
        self._open_scope(node.node_id, node.node_id + "/", event.spec, {}, node.scope.policy)

    def _on_array_expanded(self, event: ArrayExpanded) -> None:
        node = self._node(event)
        if not isinstance(node.spec, ArrayNode) or node.phase != "queued" or node.node_id in self.arrays:
            self._invalid(event, "only a queued map node expands, once")
        node.phase = "running"
        node.started_at = event.at
        self._expand_array(node, event)

    def _on_chunk_queued(self, event: ChunkQueued) -> None:
        array_id, _, label = event.node_id.rpartition("/")
        array = self.arrays.get(array_id)
        if array is None or self.nodes[array_id].phase != "running":
            self._invalid(event, "no running map expanded under this id")
        if label != f"c{array.chunks + 1}" or event.attempt != 1:
            self._invalid(event, f"the map's next chunk is {array_id}/c{array.chunks + 1}, attempt 1")
        if not event.elements or len(event.elements) != len(event.attempts):
            self._invalid(event, "a chunk needs elements, each with its attempt")
        for index, attempt in zip(event.elements, event.attempts, strict=True):
            why = array.claim(index, attempt)
            if why:
                self._invalid(event, why)
        node = NodeState(
            node_id=event.node_id,
            spec=self.nodes[array_id].spec,
            scope=None,
            array_parent=array_id,
            phase="queued",
            attempt=1,
            queued_at=event.at,
            chunk=ChunkState(list(event.elements), list(event.attempts)),
        )
        self.nodes[event.node_id] = node
        self.active[event.node_id] = None
        self._push_deadline(node, event.at)
        array.chunks += 1
        array.open_chunks += 1
        self.chunked_elements += len(event.elements) - 1

    def _on_chunk_finished(self, event: ChunkFinished) -> None:
        node = self._attempt_node(event, ("queued", "running"))
        chunk = node.chunk
        if chunk is None:
            self._invalid(event, "not a chunk")
        array = self.arrays[node.array_parent or ""]
        if sorted(result.index for result in event.results) != sorted(chunk.elements):
            self._invalid(event, "a chunk's results must cover each of its elements once")
        attempts = dict(zip(chunk.elements, chunk.attempts, strict=True))
        for result in event.results:
            why = array.check(attempts, result.index, result.attempt)
            if why:
                self._invalid(event, why)
        for result in event.results:
            if result.error is None:
                array.succeed(result.index, result.output)
            else:
                element_id = f"{node.array_parent}/{result.index}"
                array.fail(result.index, result.error, event.at, node.options, element_id)
        array.measure((event.at - (node.started_at or event.at)).total_seconds(), len(chunk.elements))
        self._close_chunk(node)

    def _fail_chunk(self, node: NodeState, event: NodeFailed) -> None:
        """The whole job failed (lost, timed out, its worker died): so did each of its elements."""
        self._attempt_node(event, ("queued", "running"))
        assert node.chunk is not None
        if event.error.kind == "timeout":
            self._abandon(node)
        array = self.arrays[node.array_parent or ""]
        for index in node.chunk.elements:
            array.fail(index, event.error, event.at, node.options, f"{node.array_parent}/{index}")
        self._close_chunk(node)

    def _close_chunk(self, node: NodeState) -> None:
        assert node.chunk is not None
        array = self.arrays[node.array_parent or ""]
        array.open_chunks -= 1
        self.chunked_elements -= len(node.chunk.elements) - 1
        self.active.pop(node.node_id, None)
        del self.nodes[node.node_id]  # a finished chunk leaves nothing to know
        self.marks.changed_arrays[node.array_parent or ""] = None

    def _on_elements_reused(self, event: ElementsReused) -> None:
        node = self._node(event)
        array = self.arrays.get(node.node_id)
        if array is None or node.phase != "running":
            self._invalid(event, "only a running, expanded map reuses elements")
        for result in event.results:
            why = array.reuse(result.index, result.output)
            if why:
                self._invalid(event, why)
        self.marks.changed_arrays[node.node_id] = None

    # -- helpers -------------------------------------------------------------------------------------

    def _invalid(self, event: AnyEvent, why: str) -> NoReturn:
        raise InvalidTransition(event.execution_id, event.version, type(event).__name__, event.node_id, why)

    def _node(self, event: AnyEvent) -> NodeState:
        node = self.nodes.get(event.node_id) or self._element(event.node_id)
        if node is None:
            self._invalid(event, "no such node")
        return node

    def _element(self, node_id: str) -> NodeState | None:
        """The state of map element ``<array>/<index>``, created on first reference."""
        parent, _, index_text = node_id.rpartition("/")
        array = self.arrays.get(parent)
        if array is None or not index_text.isdigit() or int(index_text) >= array.size:
            return None
        node = NodeState(node_id=node_id, spec=self.nodes[parent].spec, scope=None, array_parent=parent)
        self.nodes[node_id] = node
        return node

    def _attempt_node(self, event: AnyEvent, phases: tuple[str, ...]) -> NodeState:
        node = self._node(event)
        if node.phase not in phases:
            self._invalid(event, f"node is {node.phase}, expected {' or '.join(phases)}")
        if event.attempt != node.attempt:
            self._invalid(event, f"attempt {event.attempt} is not the current attempt {node.attempt}")
        return node

    def _open_scope(
        self,
        owner: str | None,
        prefix: str,
        spec: WorkflowSpec,
        inputs: dict[str, bytes],
        policy: FailurePolicy | None = None,
    ) -> None:
        scope = Scope(
            policy=policy or spec.failure_policy,
            prefix=prefix,
            owner=owner,
            spec=spec,
            inputs={**spec.defaults, **inputs},
            unfinished=len(spec.nodes),
            pending_deps={},
            dependents={},
        )
        self.scopes[owner] = scope
        for node_spec in spec.nodes:
            deps = set()
            for binding in node_spec.inputs.values():
                deps.update(binding_dependencies(binding))
            scope.pending_deps[node_spec.id] = len(deps)
            for dep in deps:
                scope.dependents.setdefault(dep, []).append(node_spec.id)
            full_id = prefix + node_spec.id
            self.nodes[full_id] = NodeState(node_id=full_id, spec=node_spec, scope=scope)
            if not deps:
                self.ready[full_id] = None
        if scope.unfinished == 0:
            self.marks.finished_scopes[owner] = None

    def _expand_array(self, node: NodeState, event: ArrayExpanded) -> None:
        spec = node.spec
        assert isinstance(spec, ArrayNode) and node.scope is not None
        mapped: dict[str, list[bytes]] = {}
        broadcast: dict[str, bytes] = {}
        for name, binding in spec.inputs.items():
            literal = self.resolve(node.scope, binding)
            if name in spec.mapped:
                mapped[name] = split_list_literal(literal)
                if len(mapped[name]) != event.size:
                    self._invalid(event, f"mapped input {name!r} has {len(mapped[name])} elements")
            else:
                broadcast[name] = literal
        self.arrays[node.node_id] = ArrayState.new(event.size, mapped, broadcast)
        self.marks.changed_arrays[node.node_id] = None

    def _push_deadline(self, node: NodeState, since: datetime) -> None:
        """Arm the attempt's timeout from ``since``: queueing, then again from the real start.

        The attempt's clock is its running time: an attempt that waits for a free worker must not
        time out for it. The entry from queueing stays as a backstop for executors that never say
        when an attempt starts; the planner measures from ``started_at`` once it is known.
        """
        timeout = node.options.timeout
        if timeout is not None:
            heapq.heappush(self.marks.deadlines, (since + timedelta(seconds=timeout), node.node_id, node.attempt))

    def deadline_of(self, node: NodeState) -> datetime | None:
        """When the node's current attempt times out (None: no timeout)."""
        timeout = node.options.timeout
        since = node.started_at or node.queued_at
        return None if timeout is None or since is None else since + timedelta(seconds=timeout)

    def _claim_element(self, node: NodeState) -> None:
        """A map element of a log written before chunks leaves ``waiting`` (one event per element)."""
        array = self.arrays[node.array_parent or ""]
        index = int(node.node_id.rpartition("/")[2])
        array.claim(index, array.attempts[index] + 1)
        node.phase = "queued"  # claimed; the caller sets the final phase

    def _is_composite(self, node: NodeState) -> bool:
        """Array and subworkflow nodes, and dynamic nodes once expanded: their children do the work."""
        if node.array_parent is not None:
            return False
        return not node.spec.runs_attempts or node.node_id in self.scopes

    def _abandon(self, node: NodeState) -> None:
        """The log stops waiting for the node's current attempt, which may still run: mark it for
        cancelling (the loop does it at once, and again after a restart)."""
        self.marks.to_cancel.append(UnwantedAttempt(node.node_id, node.attempt, node.executor, node.handle))

    def _succeed(self, node: NodeState, outputs: dict[str, bytes], at: datetime) -> None:
        self.active.pop(node.node_id, None)
        node.phase = "succeeded"
        node.outputs = dict(outputs)
        node.error = None
        node.finished_at = at
        self._finished(node, success=True)

    def _finished(self, node: NodeState, *, success: bool) -> None:
        if node.array_parent is not None:  # an element of a log written before chunks
            array = self.arrays[node.array_parent]
            index = int(node.node_id.rpartition("/")[2])
            if success:
                array.succeed(index, (node.outputs or {}).get("o0"))
            else:
                array.phases[index] = FAILED
                array.in_flight -= 1
                array.failed += 1
                if node.error is not None:
                    array.errors[index] = node.error
                    array.first_failure = array.first_failure or node.error
            self.marks.changed_arrays[node.array_parent] = None
            return
        if node.node_id in self.arrays or node.node_id in self.scopes:
            self._drop_children(node.node_id)
        scope = node.scope
        assert scope is not None
        local_id = node.node_id[len(scope.prefix) :]
        scope.unfinished -= 1
        if node.phase == "failed" and node.error is not None:
            if not node.error.node_id:
                node.error = msgspec.structs.replace(node.error, node_id=node.node_id)
            scope.failure = scope.failure or node.error
            self.failures.append(node.error)
            if scope.policy == "fail_fast":
                self.marks.failed_fast[scope.owner] = None
        for dependent in scope.dependents.get(local_id, ()):
            full_id = scope.prefix + dependent
            if success:
                scope.pending_deps[dependent] -= 1
                if scope.pending_deps[dependent] == 0 and full_id not in self.to_skip:
                    self.ready[full_id] = None
            elif self.nodes[full_id].phase == "waiting":
                self.ready.pop(full_id, None)
                self.to_skip[full_id] = None
        if scope.unfinished == 0:
            self.marks.finished_scopes[scope.owner] = None

    def _drop_children(self, node_id: str) -> None:
        """A composite node finished: its unfinished children leave the planner's indexes; attempts
        of theirs still in flight are abandoned (cancelled)."""
        prefix = node_id + "/"
        for child in [key for key in self.active if key.startswith(prefix)]:
            child_node = self.nodes[child]
            self._abandon(child_node)
            if child_node.chunk is not None:
                self.chunked_elements -= len(child_node.chunk.elements) - 1
        for index in (self.active, self.retrying, self.ready, self.to_skip):
            for child in [key for key in index if key.startswith(prefix)]:
                del index[child]
        marks = self.marks
        marks.changed_arrays.pop(node_id, None)
        marks.finished_scopes.pop(node_id, None)
        for owner in [owner for owner in marks.failed_fast if owner is not None and owner.startswith(prefix)]:
            del marks.failed_fast[owner]
        marks.failed_fast.pop(node_id, None)

    def _close(self, at: datetime) -> None:
        """A terminal execution event: nothing is runnable any more; what still runs is abandoned."""
        self.finished_at = at
        for node_id in self.active:
            self._abandon(self.nodes[node_id])
        self.active.clear()
        self.ready.clear()
        self.to_skip.clear()
        self.retrying.clear()
        self.marks.clear()

    # -- queries used by the planner -----------------------------------------------------------------

    def spec_of_subworkflow(self, name: str) -> WorkflowSpec:
        """The sub-workflow spec ``name`` (sub-workflows are hoisted into the root spec)."""
        for scope in self.scopes.values():
            found = scope.spec.subworkflows.get(name)
            if found is not None:
                return found
        raise KeyError(f"sub-workflow {name!r} is not in the spec")

    def resolve(self, scope: Scope, binding: Binding) -> bytes:
        """The literal a binding denotes in ``scope`` (every dependency must have succeeded)."""
        match binding:
            case LiteralBinding(value=value):
                return value
            case InputBinding(name=name):
                return scope.inputs[name]
            case OutputRef(node=node, output=output):
                outputs = self.nodes[scope.prefix + node].outputs or {}
                return outputs[output]
            case ListBinding(items=items):
                return join_list_literal(self.resolve(scope, item) for item in items)
            case DictBinding(items=items):
                return join_dict_literal({key: self.resolve(scope, item) for key, item in items.items()})
        raise TypeError(f"unknown binding {binding!r}")

    def node_inputs(self, node: NodeState) -> dict[str, bytes]:
        """The input literals of a leaf attempt."""
        if node.array_parent is not None:
            index = int(node.node_id.rpartition("/")[2])
            return self.arrays[node.array_parent].element_inputs(index)
        assert node.scope is not None
        return {name: self.resolve(node.scope, binding) for name, binding in node.spec.inputs.items()}

    def scope_outputs(self, scope: Scope) -> dict[str, bytes]:
        """The output literals of a finished scope."""
        return {name: self.resolve(scope, binding) for name, binding in scope.spec.output_bindings.items()}


# Each event kind folds through one small method; a kind missing here is refused (STYLE 17).
_APPLY: dict[type, Callable[[ExecutionState, Any], None]] = {
    ExecutionCreated: ExecutionState._on_created,
    ExecutionStarted: ExecutionState._on_started,
    ExecutionSucceeded: ExecutionState._on_succeeded,
    ExecutionFailed: ExecutionState._on_failed,
    ExecutionAborted: ExecutionState._on_aborted,
    NodeQueued: ExecutionState._on_node_queued,
    NodeRunning: ExecutionState._on_node_running,
    NodeSucceeded: ExecutionState._on_node_succeeded,
    NodeFailed: ExecutionState._on_node_failed,
    NodeSkipped: ExecutionState._on_node_skipped,
    NodeCacheHit: ExecutionState._on_node_reused,
    NodeRecovered: ExecutionState._on_node_reused,
    DynamicExpanded: ExecutionState._on_dynamic_expanded,
    ArrayExpanded: ExecutionState._on_array_expanded,
    ChunkQueued: ExecutionState._on_chunk_queued,
    ChunkFinished: ExecutionState._on_chunk_finished,
    ElementsReused: ExecutionState._on_elements_reused,
}
