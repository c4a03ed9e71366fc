"""The compiled form of workflows: specs, bindings, task references. The floor of the import graph.

A `WorkflowSpec` is what the compiler produces from a ``@workflow`` (or a ``@dynamic`` body run with
concrete inputs) and what the planner executes. It holds no Python objects, only data, so it can be
stored in the event log (``ExecutionCreated``, ``DynamicExpanded``) and planned after a restart in a
process that never imported the user's code.

Values are literals: canonical msgpack bytes (see ``engine._literals``). The planner moves literals
around without decoding them; only executors (task inputs/outputs) and the Engine facade (workflow
inputs/outputs) turn them into Python values.

Node ids are path segments without ``/``. Nested nodes are addressed by paths: ``prune/train-2`` is a
child of the dynamic or subworkflow node ``prune``; ``map/17`` is element 17 of the map node ``map``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "DEFAULT_SYSTEM_RETRIES",
    "ArrayNode",
    "Binding",
    "DictBinding",
    "DynamicNode",
    "ErrorInfo",
    "FailurePolicy",
    "InputBinding",
    "ListBinding",
    "LiteralBinding",
    "NodeSpec",
    "OutputRef",
    "Resources",
    "SubworkflowNode",
    "TaskNode",
    "TaskOptions",
    "TaskRef",
    "TypedName",
    "WorkflowSpec",
]

FailurePolicy = Literal["fail_fast", "finish_executable"]

# Worker deaths and lost submissions are retried on a budget of their own, so that a flaky machine
# does not eat the user's `retries`.
DEFAULT_SYSTEM_RETRIES = 3


class Resources(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a task needs to run: CPUs, memory (``"2Gi"``, ``"512Mi"``), GPUs (fractions allowed)."""

    cpu: float = 1.0
    mem: str | None = None
    gpu: float = 0.0


class TaskRef(msgspec.Struct, frozen=True, omit_defaults=True):
    """Where to find a task's code.

    ``module``/``qualname`` locate the task object by import; ``pickled`` holds the cloudpickled task
    when its module cannot be imported elsewhere (``__main__``, a notebook). ``source_hash`` is the
    hash of the task's source code, part of the workflow version and of cache keys. ``is_async``
    says the task is an ``async def`` (an executor may start it without a worker thread).
    """

    name: str
    module: str
    qualname: str
    source_hash: str
    pickled: bytes | None = None
    is_async: bool = False


class TaskOptions(msgspec.Struct, frozen=True, omit_defaults=True):
    """Execution options of a task, copied into the spec so the planner needs no user code."""

    retries: int = 0
    timeout: float | None = None  # seconds
    cache: bool = False
    cache_version: str = ""
    cache_serialize: bool = False
    cache_ignore_inputs: tuple[str, ...] = ()
    resources: Resources = Resources()
    executor: str | None = None
    secrets: tuple[str, ...] = ()
    system_retries: int = DEFAULT_SYSTEM_RETRIES


class TypedName(msgspec.Struct, frozen=True, omit_defaults=True):
    """One input or output of an interface: its name and a readable form of its Python type."""

    name: str
    type: str
    optional: bool = False  # an input with a default, or typed Optional


# --- bindings: where a node input's value comes from ---------------------------------------------


class OutputRef(msgspec.Struct, frozen=True, tag="output"):
    """The output ``output`` of the sibling node ``node`` (same scope)."""

    node: str
    output: str


class InputBinding(msgspec.Struct, frozen=True, tag="input"):
    """The input ``name`` of the enclosing workflow (the scope's inputs)."""

    name: str


class LiteralBinding(msgspec.Struct, frozen=True, tag="literal"):
    """A constant, encoded as a literal at compile time."""

    value: bytes


class ListBinding(msgspec.Struct, frozen=True, tag="list"):
    """A list assembled from bindings, e.g. ``join(results=[a, b, c])`` with promises ``a, b, c``."""

    items: list[Binding]


class DictBinding(msgspec.Struct, frozen=True, tag="dict"):
    """A ``dict[str, T]`` assembled from bindings; keys are kept sorted for canonical encoding."""

    items: dict[str, Binding]


Binding = OutputRef | InputBinding | LiteralBinding | ListBinding | DictBinding


# --- nodes -----------------------------------------------------------------------------------------


class TaskNode(msgspec.Struct, frozen=True, tag="task", omit_defaults=True):
    """Run one task."""

    id: str
    task: TaskRef
    inputs: dict[str, Binding]
    interface_outputs: list[TypedName]
    options: TaskOptions = TaskOptions()


class DynamicNode(msgspec.Struct, frozen=True, tag="dynamic", omit_defaults=True):
    """Run a ``@dynamic`` function on an executor; it returns a sub-spec whose nodes run as children."""

    id: str
    task: TaskRef
    inputs: dict[str, Binding]
    interface_outputs: list[TypedName]
    options: TaskOptions = TaskOptions()


class ArrayNode(msgspec.Struct, frozen=True, tag="array", omit_defaults=True):
    """``map_task``: run ``task`` once per element of the ``mapped`` list inputs.

    ``inputs`` binds every task input; those named in ``mapped`` must be lists of equal length and
    are split element-wise, the others (bound with ``functools.partial``) are broadcast. The node's
    single output ``o0`` is the list of element outputs (``None`` for failed elements when
    ``min_success_ratio`` < 1).
    """

    id: str
    task: TaskRef
    inputs: dict[str, Binding]
    mapped: list[str]
    interface_outputs: list[TypedName]
    options: TaskOptions = TaskOptions()
    concurrency: int | None = None
    min_success_ratio: float = 1.0


class SubworkflowNode(msgspec.Struct, frozen=True, tag="subworkflow", omit_defaults=True):
    """Run the workflow ``spec.subworkflows[workflow]`` with these inputs as a child scope."""

    id: str
    workflow: str
    inputs: dict[str, Binding]
    interface_outputs: list[TypedName]


NodeSpec = TaskNode | DynamicNode | ArrayNode | SubworkflowNode


class WorkflowSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """A compiled workflow.

    ``nodes`` are in a topological order. ``outputs`` binds each workflow output. ``defaults`` holds
    the literal default of every optional input. ``version`` is a content hash of the rest of the
    spec and of the source of every task it uses (``""`` for sub-specs built by ``@dynamic``).
    """

    name: str
    inputs: list[TypedName]
    outputs: list[TypedName]
    nodes: list[NodeSpec]
    output_bindings: dict[str, Binding]
    defaults: dict[str, bytes] = {}
    subworkflows: dict[str, WorkflowSpec] = {}
    failure_policy: FailurePolicy = "fail_fast"
    max_parallelism: int | None = None
    version: str = ""


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """Why something failed: ``kind`` is ``user``, ``system`` or ``timeout``."""

    kind: Literal["user", "system", "timeout"]
    message: str
    traceback: str = ""
    retryable: bool = True
    node_id: str = ""
