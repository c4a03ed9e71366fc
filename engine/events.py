"""Every state change of an execution is one of these events (DESIGN section 4).

Events are forever: add fields only with defaults, never rename, retype or reorder one. They are
encoded as msgpack for storage and JSON for the stream, through the two codec pairs below; nothing
else should encode an event.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from engine.models import ErrorInfo, WorkflowSpec

__all__ = [
    "TERMINAL_EXECUTION_KINDS",
    "AnyEvent",
    "ArrayExpanded",
    "ChunkFinished",
    "ChunkQueued",
    "DynamicExpanded",
    "ElementResult",
    "ElementsReused",
    "Event",
    "ExecutionAborted",
    "ExecutionCreated",
    "ExecutionFailed",
    "ExecutionStarted",
    "ExecutionSucceeded",
    "NodeCacheHit",
    "NodeFailed",
    "NodeQueued",
    "NodeRecovered",
    "NodeRunning",
    "NodeSkipped",
    "NodeSucceeded",
    "decode_event",
    "decode_event_json",
    "encode_event",
    "encode_event_json",
]


class Event(msgspec.Struct, frozen=True, tag_field="kind", kw_only=True, omit_defaults=True):
    """The envelope every event carries.

    ``version`` numbers an execution's events 1, 2, 3... with no gaps; the writer sets it to the
    store's expected version plus the event's position in the batch. ``node_id`` is ``""`` for
    execution-level events. ``at`` is UTC.
    """

    execution_id: str
    version: int
    at: datetime
    node_id: str = ""
    attempt: int = 0


class ExecutionCreated(Event, frozen=True, tag="ExecutionCreated"):
    """An execution was accepted: its inputs are validated literals; ``spec`` is what will run."""

    project: str
    domain: str
    workflow: str
    workflow_version: str
    spec: WorkflowSpec
    inputs: dict[str, bytes]
    parent: str | None = None  # the execution this one recovers
    # ``module:qualname`` of the workflow function, so a reader that can import it gets typed outputs
    workflow_ref: str | None = None
    # inputs resolved from the catalog at launch (an ArtifactQuery): input name -> artifact id
    artifacts: dict[str, str] = {}


class ExecutionStarted(Event, frozen=True, tag="ExecutionStarted"):
    """The control loop picked the execution up."""


class ExecutionSucceeded(Event, frozen=True, tag="ExecutionSucceeded"):
    """Every node finished; ``outputs`` are the workflow's output literals."""

    outputs: dict[str, bytes] = {}


class ExecutionFailed(Event, frozen=True, tag="ExecutionFailed"):
    """A node failed for good (or, with finish_executable, nothing runnable is left)."""

    error: ErrorInfo


class ExecutionAborted(Event, frozen=True, tag="ExecutionAborted"):
    """Someone aborted the execution; running attempts are cancelled."""

    reason: str = ""


class NodeQueued(Event, frozen=True, tag="NodeQueued"):
    """Attempt ``attempt`` of the node is ready and handed to an executor."""


class NodeRunning(Event, frozen=True, tag="NodeRunning"):
    """An executor started the attempt; ``handle`` is its durable id there, for polls and cancels
    after a restart (``""`` when the executor has none)."""

    executor: str = ""
    worker: str = ""
    gpu_ids: list[str] = []
    handle: str = ""


class NodeSucceeded(Event, frozen=True, tag="NodeSucceeded"):
    """The attempt (or, for dynamic/array/subworkflow nodes, the node's children) finished."""

    outputs: dict[str, bytes] = {}
    logs: str = ""  # blob address of what the attempt printed and logged ("" if nothing)


class NodeFailed(Event, frozen=True, tag="NodeFailed"):
    """The attempt failed; ``error.retryable`` and the node's retry budgets decide what comes next."""

    error: ErrorInfo
    logs: str = ""  # blob address of what the attempt printed and logged ("" if nothing)


class NodeSkipped(Event, frozen=True, tag="NodeSkipped"):
    """The node will not run: an upstream node failed, or the execution stopped."""

    reason: str = ""


class NodeCacheHit(Event, frozen=True, tag="NodeCacheHit"):
    """The catalog had the outputs; the node did not run."""

    artifact: str
    outputs: dict[str, bytes] = {}


class NodeRecovered(Event, frozen=True, tag="NodeRecovered"):
    """The outputs were copied from ``source_execution``, where the node had succeeded."""

    source_execution: str
    outputs: dict[str, bytes] = {}


class DynamicExpanded(Event, frozen=True, tag="DynamicExpanded"):
    """A dynamic node's function returned ``spec``; its nodes now run as the node's children."""

    spec: WorkflowSpec


class ArrayExpanded(Event, frozen=True, tag="ArrayExpanded"):
    """A map node's inputs resolved to ``size`` elements."""

    size: int


class ElementResult(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """The outcome of one map element's attempt, inside a batch event.

    ``output`` is the element's output literal when it succeeded (``None`` for a task without
    outputs: the map then collects nil); ``error`` is set when it failed. ``logs`` is what the
    element printed and logged: its text in an executor's `TaskStatus`, the blob address of that
    text in an event ("" if nothing).
    """

    index: int
    attempt: int
    output: bytes | None = None
    error: ErrorInfo | None = None
    logs: str = ""


class ChunkQueued(Event, frozen=True, tag="ChunkQueued"):
    """Elements of a map go to an executor as one job, a chunk: ``node_id`` is ``<map>/c<n>``
    (chunks of a map are numbered 1, 2, 3...), attempt 1.

    ``NodeRunning`` on the chunk's id records its start, ``ChunkFinished`` its per-element results,
    ``NodeFailed`` a failure of the whole job (every element in it fails with that error, each on
    its own retry budget). ``attempts[i]`` is the attempt of element ``elements[i]``.
    """

    elements: list[int]
    attempts: list[int]


class ChunkFinished(Event, frozen=True, tag="ChunkFinished"):
    """The chunk ``node_id`` (``<map>/c<n>``) ended: one result per element, in any order."""

    results: list[ElementResult]


class ElementsReused(Event, frozen=True, tag="ElementsReused"):
    """Elements of the map ``node_id`` take outputs they had elsewhere instead of running:
    ``source`` is ``recovered:<execution id>``, or ``cache`` with ``artifacts[i]`` the catalog
    artifact of ``results[i]``."""

    source: str
    results: list[ElementResult]
    artifacts: list[str] = []


AnyEvent = (
    ExecutionCreated
    | ExecutionStarted
    | ExecutionSucceeded
    | ExecutionFailed
    | ExecutionAborted
    | NodeQueued
    | NodeRunning
    | NodeSucceeded
    | NodeFailed
    | NodeSkipped
    | NodeCacheHit
    | NodeRecovered
    | DynamicExpanded
    | ArrayExpanded
    | ChunkQueued
    | ChunkFinished
    | ElementsReused
)

TERMINAL_EXECUTION_KINDS: frozenset[str] = frozenset({"ExecutionSucceeded", "ExecutionFailed", "ExecutionAborted"})

_msgpack_encoder = msgspec.msgpack.Encoder()
_msgpack_decoder = msgspec.msgpack.Decoder(AnyEvent)
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(AnyEvent)


def encode_event(event: Event) -> bytes:
    """Encode an event as msgpack, for storage."""
    return _msgpack_encoder.encode(event)


def decode_event(payload: bytes) -> AnyEvent:
    """Decode a stored event. Raises ``msgspec.ValidationError`` on an unknown kind (loudly, on purpose)."""
    return _msgpack_decoder.decode(payload)


def encode_event_json(event: Event) -> bytes:
    """Encode an event as JSON, for the event stream."""
    return _json_encoder.encode(event)


def decode_event_json(payload: bytes) -> AnyEvent:
    """Decode an event from the event stream."""
    return _json_decoder.decode(payload)
