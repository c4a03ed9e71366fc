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

import fractions
import math
import re
from collections.abc import Iterator
from typing import ClassVar, Literal

import msgspec

from engine.errors import InvalidResources

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
    "TaskNodeSpec",
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
    """What a task needs to run: CPUs, memory and GPUs, checked when the task is defined.

    Attributes:
        cpu: CPUs, a number >= 0 (fractions allowed: ``0.5``).
        mem: memory, ``None`` for the executor's default, else a Kubernetes-style quantity: a
            number of bytes with an optional suffix, binary ``Ki Mi Gi Ti Pi Ei`` (powers of 1024)
            or decimal ``k M G T P E`` (powers of 1000), or a decimal exponent instead of a suffix:
            ``"512Mi"``, ``"2Gi"``, ``"1.5G"``, ``"1e9"``, ``"1073741824"``. Fractions of a byte
            round up; the result must be at least one byte. A plain ``int`` is taken as bytes and
            stored as its decimal string. ``"2GB"``, ``"512mb"`` and ``"500m"`` (milli-bytes) are
            rejected with the spelling to use instead. See `mem_bytes`.
        gpu: GPUs, a number >= 0 (fractions share a GPU: ``0.25``).

    Raises:
        InvalidResources: a field is invalid (a `ConfigError`; also a ``ValueError``, so decoding a
            stored value that is invalid fails as a ``msgspec.ValidationError``).
    """

    cpu: float = 1.0
    mem: str | None = None
    gpu: float = 0.0

    def __post_init__(self) -> None:
        _check_count("cpu", self.cpu)
        _check_count("gpu", self.gpu)
        if isinstance(self.mem, int) and not isinstance(self.mem, bool):
            if self.mem <= 0:
                raise InvalidResources("mem", self.mem, f"memory must be at least one byte: write {_MEM_FORMS}")
            # the field stays a string, as stored events have always held it
            msgspec.structs.force_setattr(self, "mem", str(self.mem))
        elif self.mem is not None:
            _memory_bytes(self.mem)

    @property
    def mem_bytes(self) -> int | None:
        """``mem`` in bytes (``None`` when no memory was asked for)."""
        return None if self.mem is None else _memory_bytes(self.mem)


_MEM_FORMS = (
    "a quantity like '512Mi' or '2Gi': bytes with an optional suffix Ki Mi Gi Ti Pi Ei (powers of 1024) "
    "or k M G T P E (powers of 1000), or an int of bytes"
)
_MEM_QUANTITY = re.compile(
    r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?:(?P<suffix>[KMGTPE]i|[kMGTPE])|[eE](?P<exp>[+-]?\d{1,2}))?"
)
_MEM_MULTIPLIER: dict[str | None, int] = {
    None: 1,
    **{f"{p}i": 1024 ** (i + 1) for i, p in enumerate("KMGTPE")},
    **{p: 1000 ** (i + 1) for i, p in enumerate("kMGTPE")},
}
_MEM_MAX = 2**63 - 1  # the most Kubernetes and Ray accept
_COUNT_MAX = 2**53  # cpu/gpu: beyond, a float (the stored type) no longer holds every integer


def _check_count(field: str, value: object) -> None:
    """``cpu``/``gpu``: a finite number >= 0; a string or a bool is a mistake worth naming."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value >= 0 and value < _COUNT_MAX and math.isfinite(value):
            return
        too_large = " below 2**53" if value >= _COUNT_MAX else ""
        raise InvalidResources(field, value, f"{field} must be a finite number >= 0{too_large}, like 1 or 0.5")
    fix = f"{field} must be a number >= 0, like 1 or 0.5"
    if isinstance(value, str):
        text = value.strip()
        try:  # "2" or Kubernetes' "500m": say which number was meant
            number = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(number) and number >= 0:
                fix += f"; write {field}={number:g}, a number rather than a string"
    raise InvalidResources(field, value, fix)


def _memory_bytes(quantity: str) -> int:
    """The number of bytes a memory quantity stands for (see `Resources`), rounded up.

    Args:
        quantity: e.g. ``"512Mi"``, ``"2G"``, ``"1e9"``, ``"1048576"``.

    Returns:
        Bytes, at least 1.

    Raises:
        InvalidResources: ``quantity`` is not a memory quantity, or is below one byte or 2**63 bytes or more.
    """
    if not isinstance(quantity, str):
        raise InvalidResources("mem", quantity, f"memory must be {_MEM_FORMS}")
    match = _MEM_QUANTITY.fullmatch(quantity)
    if match is None:
        raise InvalidResources("mem", quantity, _memory_mistake(quantity))
    exact = fractions.Fraction(match["number"]) * _MEM_MULTIPLIER[match["suffix"]]
    value = math.ceil(exact * fractions.Fraction(10) ** int(match["exp"] or 0))
    if value < 1:
        raise InvalidResources("mem", quantity, f"memory must be at least one byte: write {_MEM_FORMS}")
    if value > _MEM_MAX:
        raise InvalidResources("mem", quantity, f"memory must be less than 2**63 bytes (8Ei): write {_MEM_FORMS}")
    return value


def _memory_mistake(quantity: str) -> str:
    """Why ``quantity`` is no memory quantity, with the spelling to use when it looks like a slip."""
    found = re.fullmatch(r"\s*(?P<sign>[+-]?)(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[A-Za-z]*)\s*", quantity)
    if found is None:
        return f"memory must be {_MEM_FORMS}"
    number, unit = found["number"], found["unit"]
    if found["sign"] == "-":
        return f"memory must be positive: write {_MEM_FORMS}"
    if unit in _MEM_MULTIPLIER or not unit or found["sign"]:
        return f"write '{number}{unit}', without sign or spaces"
    if unit == "m":
        return (
            f"'m' means thousandths of a byte: write '{number}M' ({number} * 1000**2 bytes) "
            f"or '{number}Mi' ({number} * 1024**2 bytes)"
        )
    letter = unit[:1].upper()
    if unit != "e" and letter and letter in "KMGTPE" and unit[1:].lower() in ("", "b", "i", "ib"):
        decimal = "k" if letter == "K" else letter
        power = "KMGTPE".index(letter) + 1
        times = "" if power == 1 else f"**{power}"
        return (
            f"memory suffixes are case-sensitive and take no 'B': write '{number}{decimal}' "
            f"({number} * 1000{times} bytes) or '{number}{letter}i' ({number} * 1024{times} bytes)"
        )
    return f"memory must be {_MEM_FORMS}"


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
    # the hash of the task's typed signature (set with ``cache``: a changed interface misses), and
    # the age in seconds beyond which a cached output is not reused (None: any age)
    cache_interface: str = ""
    cache_ttl: float | None = None
    # publish the outputs as a named artifact, partitioned by the values of these inputs
    publish: str = ""
    partitions: tuple[str, ...] = ()


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

    # Whether the node itself runs attempts on an executor (its children do otherwise); the fold
    # reads these class-level facts instead of testing node kinds.
    runs_attempts: ClassVar[bool] = True
    request_kind: ClassVar[str] = "task"  # what `TaskRequest.kind` its attempts carry

    id: str
    task: TaskRef
    inputs: dict[str, Binding]
    interface_outputs: list[TypedName]
    options: TaskOptions = TaskOptions()


class DynamicNode(msgspec.Struct, frozen=True, tag="dynamic", omit_defaults=True):
    """Run a ``@dynamic`` function on an executor; it returns a sub-spec whose nodes run as children."""

    runs_attempts: ClassVar[bool] = True  # until it expands; then its children run
    request_kind: ClassVar[str] = "dynamic"

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

    runs_attempts: ClassVar[bool] = False  # its elements do
    request_kind: ClassVar[str] = "task"  # of its elements

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

    runs_attempts: ClassVar[bool] = False
    request_kind: ClassVar[str] = ""  # never submitted

    id: str
    workflow: str
    inputs: dict[str, Binding]
    interface_outputs: list[TypedName]

    @property
    def options(self) -> TaskOptions:
        """A subworkflow has no task options of its own: its nodes have theirs."""
        return _NO_OPTIONS


NodeSpec = TaskNode | DynamicNode | ArrayNode | SubworkflowNode
TaskNodeSpec = TaskNode | DynamicNode | ArrayNode  # the kinds that name a task
_NO_OPTIONS = TaskOptions()


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

    def task_nodes(self) -> Iterator[TaskNodeSpec]:
        """Every node that names a task, in this spec and in its sub-workflows (recursively)."""
        for node in self.nodes:
            if not isinstance(node, SubworkflowNode):
                yield node
        for sub in self.subworkflows.values():
            yield from sub.task_nodes()

    def problem(self) -> str | None:
        """What does not hold together in this spec, or None: what ``@workflow`` never builds,
        but a spec made by hand, decoded from elsewhere (a ``@dynamic`` expansion sent back by a
        worker) or changed after compiling may hold: a binding to a node that does not exist or
        comes later, an unknown input or output, two nodes with one id, a missing subworkflow,
        options out of range."""
        return _spec_problem(self, self.name or "<unnamed>", depth=0)


_MAX_SPEC_DEPTH = 100  # nested subworkflows


def _spec_problem(spec: WorkflowSpec, where: str, depth: int) -> str | None:
    if depth > _MAX_SPEC_DEPTH:
        return f"{where}: subworkflows nested more than {_MAX_SPEC_DEPTH} deep"
    if not spec.name:
        return f"{where}: the spec has no name"
    inputs = {typed.name for typed in spec.inputs}
    if len(inputs) != len(spec.inputs):
        return f"{where}: an input is declared twice"
    if unknown := sorted(set(spec.defaults) - inputs):
        return f"{where}: defaults for unknown input(s) {unknown}"
    outputs: dict[str, set[str]] = {}  # node id -> its output names, in order of appearance
    for node in spec.nodes:
        if not node.id or "/" in node.id:
            return f"{where}: node id {node.id!r} is empty or holds '/'"
        if node.id in outputs:
            return f"{where}: two nodes have the id {node.id!r}"
        for name, binding in node.inputs.items():
            problem = _binding_problem(binding, inputs, outputs)
            if problem is not None:
                return f"{where}: node {node.id!r} input {name!r} {problem}"
        if isinstance(node, SubworkflowNode):
            if node.workflow not in spec.subworkflows:
                return f"{where}: node {node.id!r} runs subworkflow {node.workflow!r}, which the spec does not hold"
        else:
            options = node.options
            if options.retries < 0 or options.system_retries < 0:
                return f"{where}: node {node.id!r} has a negative retry count"
            if options.timeout is not None and not options.timeout > 0:
                return f"{where}: node {node.id!r} has timeout {options.timeout!r}; it must be above 0"
        if isinstance(node, ArrayNode):
            if unknown := sorted(set(node.mapped) - set(node.inputs)):
                return f"{where}: map node {node.id!r} maps input(s) {unknown} it does not bind"
            if not 0 <= node.min_success_ratio <= 1 or (node.concurrency is not None and node.concurrency < 1):
                return f"{where}: map node {node.id!r} has min_success_ratio or concurrency out of range"
        outputs[node.id] = {typed.name for typed in node.interface_outputs}
    declared = {typed.name for typed in spec.outputs}
    if set(spec.output_bindings) != declared:
        return f"{where}: outputs {sorted(declared)} are bound as {sorted(spec.output_bindings)}"
    for name, binding in spec.output_bindings.items():
        problem = _binding_problem(binding, inputs, outputs)
        if problem is not None:
            return f"{where}: output {name!r} {problem}"
    for key, sub in spec.subworkflows.items():
        problem = _spec_problem(sub, f"{where} > subworkflow {key!r}", depth + 1)
        if problem is not None:
            return problem
    return None


def _binding_problem(binding: Binding, inputs: set[str], outputs: dict[str, set[str]]) -> str | None:
    stack: list[Binding] = [binding]
    while stack:
        current = stack.pop()
        match current:
            case OutputRef(node=node, output=output):
                if node not in outputs:
                    return f"takes an output of node {node!r}, which is not an earlier node of its scope"
                if output not in outputs[node]:
                    return f"takes output {output!r} of node {node!r}, which has {sorted(outputs[node])}"
            case InputBinding(name=name):
                if name not in inputs:
                    return f"takes workflow input {name!r}, which is not declared"
            case ListBinding(items=items):
                stack.extend(items)
            case DictBinding(items=items):
                stack.extend(items.values())
            case LiteralBinding():
                pass
            case _:
                return f"has a binding of unknown kind {type(current).__name__}"
    return None


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """Why something failed: ``kind`` is ``user``, ``system`` or ``timeout``."""

    kind: Literal["user", "system", "timeout"]
    message: str
    traceback: str = ""
    retryable: bool = True
    node_id: str = ""
