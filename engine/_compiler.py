"""The compiler: runs a ``@workflow`` (or ``@dynamic``) body with Promises and records a ``WorkflowSpec``.

The active ``CompileContext`` lives in a ``ContextVar``; a task, workflow or map called while one is
active adds a node to it instead of running. Every check happens here, at decoration time, and every
error names the workflow, the node and the argument, and says how to fix it.

The compiler sits below what it compiles: ``Task``, ``Workflow`` and ``MapTask`` import this module
(to find the active context) and subclass ``Entity``, never the other way round.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import functools
import hashlib
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from engine._literals import is_assignable, to_literal
from engine._promise import NodeOutputs, Promise
from engine._types import (
    dict_key_type,
    dict_value_type,
    fixed_tuple_arity,
    item_type,
    sequence_kind,
    type_repr,
)
from engine.errors import CompileError, TypeMismatch, UnknownInput
from engine.models import (
    ArrayNode,
    Binding,
    DictBinding,
    DynamicNode,
    InputBinding,
    ListBinding,
    LiteralBinding,
    NodeSpec,
    OutputRef,
    SubworkflowNode,
    TaskNode,
    TypedName,
    WorkflowSpec,
)

if TYPE_CHECKING:
    from engine._interface import Interface
    from engine._map import MapTask
    from engine._task import Task
    from engine._workflow import Workflow

__all__ = ["CompileContext", "Entity", "current_context", "spec_version"]

_CURRENT: contextvars.ContextVar[CompileContext | None] = contextvars.ContextVar(
    "slipstream_compile_context", default=None
)

_VERSION_ENCODER = msgspec.msgpack.Encoder(order="deterministic")


class Entity(abc.ABC):
    """Base of what a body calls to add a node: ``Task``, ``Workflow`` and ``MapTask``.

    Passing one where a value is expected (``train(model=fit)`` instead of ``fit()``) is a forgotten
    call; the compiler recognises it by this base and names it with ``describe``.
    """

    __slots__ = ()

    @abc.abstractmethod
    def describe(self) -> str:
        """How messages name it: ``task 'fit'``, ``workflow 'wf'``, ``map_task of 'fit'``.

        Returns:
            The description.
        """


def current_context() -> CompileContext | None:
    """The compile context of the ``@workflow``/``@dynamic`` body being run, if any.

    Returns:
        The active context, or ``None`` outside any compilation.
    """
    return _CURRENT.get()


def spec_version(spec: WorkflowSpec) -> str:
    """The content hash of a spec (task sources enter through each ``TaskRef.source_hash``).

    Args:
        spec: the spec; its own ``version`` field is ignored.

    Returns:
        The sha256 hex digest of the msgpack encoding of the spec with ``version=""``.
    """
    return hashlib.sha256(_VERSION_ENCODER.encode(_hashable(spec))).hexdigest()


def _hashable(spec: WorkflowSpec) -> WorkflowSpec:
    """The spec without ``version`` and without pickled task bodies.

    A task's code enters the hash through ``source_hash``; cloudpickle's bytes are not stable across
    processes and versions, so they must not change the workflow version.
    """
    nodes = [
        msgspec.structs.replace(node, task=msgspec.structs.replace(node.task, pickled=None))
        if not isinstance(node, SubworkflowNode) and node.task.pickled is not None
        else node
        for node in spec.nodes
    ]
    subworkflows = {name: _hashable(sub) for name, sub in spec.subworkflows.items()}
    return msgspec.structs.replace(spec, nodes=nodes, subworkflows=subworkflows, version="")


def _contains_promise(value: Any) -> bool:
    if isinstance(value, Promise):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_contains_promise(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_promise(v) for v in value.values())
    return False


def _is_uncalled(value: Any) -> str | None:
    """Name a task/workflow/function passed where a value was expected (a forgotten call)."""
    if isinstance(value, Entity):
        return value.describe()
    if isinstance(value, (types.FunctionType, functools.partial)):
        return f"function {getattr(value, '__name__', repr(value))!r}"
    return None


class CompileContext:
    """What one ``@workflow``/``@dynamic`` body has built so far.

    Attributes:
        name: the workflow or dynamic task name.
        kind: ``"workflow"`` or ``"dynamic"``.
        nodes: the nodes, in call order (a topological order: bindings only point backwards).
        subworkflows: specs of called workflows, hoisted flat, by name.
        used_inputs: workflow inputs bound to some node or output.
        last_unpacked: ``(node id, arity)`` of the last multi-output result being unpacked.
    """

    def __init__(self, name: str, kind: str) -> None:
        """Start an empty scope.

        Args:
            name: the workflow or dynamic task name.
            kind: ``"workflow"`` or ``"dynamic"``.
        """
        self.name = name
        self.kind = kind
        self.nodes: list[NodeSpec] = []
        self.subworkflows: dict[str, WorkflowSpec] = {}
        self.used_inputs: set[str] = set()
        self.last_unpacked: tuple[str, int] | None = None
        self._ids: set[str] = set()

    def label(self) -> str:
        """``workflow 'wf'`` / ``dynamic 'prune'``, the prefix of every message.

        Returns:
            The label.
        """
        return f"{self.kind} {self.name!r}"

    @contextlib.contextmanager
    def active(self) -> Iterator[CompileContext]:
        """Make this the current context for the duration of the block.

        Yields:
            This context.
        """
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    def run_body(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """Run a workflow/dynamic body in this context, translating unpacking errors.

        Args:
            fn: the body.
            kwargs: its inputs (Promises for a workflow, values for a dynamic).

        Returns:
            What the body returned.

        Raises:
            CompileError: the body misused a Promise or unpacked outputs into the wrong number of names.
        """
        with self.active():
            try:
                return fn(**kwargs)
            except ValueError as exc:
                if "values to unpack" in str(exc) and self.last_unpacked is not None:
                    node, arity = self.last_unpacked
                    raise CompileError(
                        f"{self.label()}: node {node!r} has {arity} outputs but its result was unpacked into "
                        f"a different number of names ({exc}); fix: unpack exactly {arity} names"
                    ) from None
                raise
            except TypeError as exc:
                if "cannot unpack non-iterable NoneType" in str(exc):
                    raise CompileError(
                        f"{self.label()}: a call to a task or workflow with no outputs was unpacked ({exc}); fix: "
                        "annotate its return type, a typing.NamedTuple for several outputs"
                    ) from None
                raise

    # --- ids and promises --------------------------------------------------------------------------

    def new_id(self, base: str) -> str:
        """A node id unique in this scope: ``base``, then ``base-2``, ``base-3``...

        Args:
            base: the task/workflow name.

        Returns:
            The id (never containing ``/``).
        """
        base = base.replace("/", "_") or "node"
        candidate, n = base, 1
        while candidate in self._ids:
            n += 1
            candidate = f"{base}-{n}"
        self._ids.add(candidate)
        return candidate

    def input_promise(self, name: str, tp: Any) -> Promise:
        """A Promise for the workflow input ``name``.

        Args:
            name: the input name.
            tp: its type.

        Returns:
            The Promise.
        """
        return Promise(self, InputBinding(name), tp, f"input {name!r} of {self.label()}")

    def _outputs(self, node: str, interface: Interface, outputs: list[tuple[str, Any]] | None = None) -> Any:
        outs = interface.outputs if outputs is None else outputs
        promises = [Promise(self, OutputRef(node, name), tp, f"output {name!r} of node {node!r}") for name, tp in outs]
        if not promises:
            return None
        if len(promises) == 1 and interface.output_tuple is None:
            return promises[0]
        return NodeOutputs(self, node, [name for name, _ in outs], promises)

    # --- bindings ----------------------------------------------------------------------------------

    def bind(self, value: Any, tp: Any, where: str) -> Binding:
        """Bind a value (Promise, list/dict holding Promises, or constant) to a slot of type ``tp``.

        Args:
            value: what the body passed.
            tp: the slot's type.
            where: ``node 'b', input 'x'`` (for messages).

        Returns:
            The binding.

        Raises:
            TypeMismatch: the value or producer type does not fit ``tp``.
            CompileError: the Promise comes from another workflow, or a task was passed uncalled.
        """
        if isinstance(value, Promise):
            if value._ctx is not self:
                raise CompileError(
                    f"{self.label()}: {where}: {value!r} belongs to {value._ctx.label()}; Promises cannot cross "
                    "workflow boundaries: pass the value in as an input of this workflow"
                )
            if not is_assignable(value._type, tp):
                raise TypeMismatch(
                    f"{self.label()}: {where} expects {type_repr(tp)} but is given {value._what} of type "
                    f"{type_repr(value._type)}; fix: change one of the annotations or convert in a task"
                )
            if isinstance(value._binding, InputBinding):
                self.used_inputs.add(value._binding.name)
            return value._binding
        uncalled = _is_uncalled(value)
        if uncalled is not None:
            raise CompileError(
                f"{self.label()}: {where} is given the {uncalled} itself, not a value; fix: call it "
                "(with keyword arguments) and pass its result"
            )
        if _contains_promise(value):
            return self._bind_composite(value, tp, where)
        try:
            return LiteralBinding(to_literal(value, tp))
        except CompileError as exc:
            raise type(exc)(f"{self.label()}: {where}: {exc}") from None

    def _bind_composite(self, value: Any, tp: Any, where: str) -> Binding:
        kind = sequence_kind(tp)
        if isinstance(value, (list, tuple)) and kind in ("list", "any"):
            arity = fixed_tuple_arity(tp)
            if arity is not None and arity != len(value):
                raise TypeMismatch(
                    f"{self.label()}: {where} expects {type_repr(tp)} ({arity} items) but is given {len(value)} "
                    "items; fix: pass exactly that many"
                )
            return ListBinding([self.bind(v, item_type(tp, i), f"{where}[{i}]") for i, v in enumerate(value)])
        if isinstance(value, dict) and kind in ("dict", "any"):
            bad = [k for k in value if not isinstance(k, str)]
            if bad:
                raise CompileError(
                    f"{self.label()}: {where}: a dict holding Promises must have str keys, got {bad[0]!r}; fix: "
                    "build the dict inside a task"
                )
            key_type = dict_key_type(tp)
            if key_type not in (str, Any):
                raise TypeMismatch(
                    f"{self.label()}: {where} expects {type_repr(tp)}, whose keys are not str, but a dict holding "
                    "Promises has str keys; fix: build the dict inside a task"
                )
            vt = dict_value_type(tp)
            return DictBinding({k: self.bind(value[k], vt, f"{where}[{k!r}]") for k in sorted(value)})
        if isinstance(value, (set, frozenset)):
            raise CompileError(
                f"{self.label()}: {where}: a set cannot hold Promises (its order is only known at run time); "
                "fix: pass a list and build the set inside a task"
            )
        raise TypeMismatch(
            f"{self.label()}: {where} expects {type_repr(tp)} but is given a {type(value).__name__} holding "
            "Promises; fix: pass a value of the annotated type"
        )

    def _bind_call(
        self, interface: Interface, node: str, args: tuple[Any, ...], kwargs: dict[str, Any], what: str
    ) -> dict[str, Binding]:
        if args:
            names = ", ".join(f"{n}=..." for n in interface.inputs) or "no arguments"
            raise CompileError(
                f"{self.label()}: node {node!r}: {what} was called with {len(args)} positional argument(s); "
                f"inputs must be passed by keyword: call it as ({names})"
            )
        for name in kwargs:
            if name not in interface.inputs:
                raise UnknownInput(
                    f"{self.label()}: node {node!r}: {what} has no input {name!r}; its inputs are "
                    f"{list(interface.inputs)}"
                )
        missing = [n for n in interface.required_inputs() if n not in kwargs]
        if missing:
            raise CompileError(
                f"{self.label()}: node {node!r}: missing required input(s) {missing} of {what}; fix: pass "
                f"{', '.join(f'{m}=...' for m in missing)}"
            )
        return {
            name: self.bind(value, interface.inputs[name].type, f"node {node!r}, input {name!r}")
            for name, value in kwargs.items()
        }

    # --- nodes -------------------------------------------------------------------------------------

    def call_task(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Add a task (or dynamic) node for a call inside the body.

        Args:
            task: the called task.
            args: positional arguments (an error).
            kwargs: keyword arguments.

        Returns:
            ``None``, a Promise, or a ``NodeOutputs`` of Promises.
        """
        node = self.new_id(task.name)
        kind = "dynamic" if task.is_dynamic else "task"
        inputs = self._bind_call(task.interface, node, args, kwargs, f"{kind} {task.name!r}")
        if task.is_dynamic:
            # the version must follow what the dynamic body calls, not only its own source
            ref = task.node_ref()
            self.nodes.append(DynamicNode(node, ref, inputs, task.interface.typed_outputs(), task.options))
        else:
            self.nodes.append(TaskNode(node, task.ref, inputs, task.interface.typed_outputs(), task.options))
        return self._outputs(node, task.interface)

    def call_workflow(self, wf: Workflow, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Add a subworkflow node for a workflow called inside the body.

        Args:
            wf: the called workflow.
            args: positional arguments (an error).
            kwargs: keyword arguments.

        Returns:
            ``None``, a Promise, or a ``NodeOutputs`` of Promises.
        """
        node = self.new_id(wf.name)
        inputs = self._bind_call(wf.interface, node, args, kwargs, f"workflow {wf.name!r}")
        for name, sub in [*wf.spec.subworkflows.items(), (wf.name, wf.spec)]:
            flat = msgspec.structs.replace(sub, subworkflows={})
            known = self.subworkflows.get(name)
            if known is not None and known != flat:
                raise CompileError(
                    f"{self.label()}: node {node!r}: two different workflows are named {name!r}; subworkflow "
                    "names must be unique within a workflow: rename one of them"
                )
            self.subworkflows[name] = flat
        self.nodes.append(SubworkflowNode(node, wf.name, inputs, wf.interface.typed_outputs()))
        return self._outputs(node, wf.interface)

    def call_map(self, mt: MapTask, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Add an array node for a ``map_task(...)(...)`` call inside the body.

        Args:
            mt: the map task.
            args: positional arguments (an error).
            kwargs: the mapped list inputs.

        Returns:
            A Promise of the list of outputs, or ``None`` if the task has no outputs.
        """
        task = mt.task
        node = self.new_id(f"map_{task.name}")
        what = f"map_task of {task.name!r}"
        if args:
            raise CompileError(
                f"{self.label()}: node {node!r}: {what} was called with positional arguments; pass each "
                "mapped list by keyword, e.g. (x=[1, 2, 3])"
            )
        if not kwargs:
            raise CompileError(
                f"{self.label()}: node {node!r}: {what} was called without a list to map over; pass at least "
                "one list input by keyword"
            )
        inputs: dict[str, Binding] = {}
        for name, value in mt.fixed.items():
            inputs[name] = self.bind(value, task.interface.inputs[name].type, f"node {node!r}, input {name!r}")
        for name, value in kwargs.items():
            if name not in task.interface.inputs:
                raise UnknownInput(
                    f"{self.label()}: node {node!r}: {what} has no input {name!r}; its inputs are "
                    f"{list(task.interface.inputs)}"
                )
            if name in mt.fixed:
                raise CompileError(
                    f"{self.label()}: node {node!r}: input {name!r} of {what} is both bound by "
                    "functools.partial and mapped; fix: pass it in one place only"
                )
            elem = task.interface.inputs[name].type
            inputs[name] = self.bind(value, list[elem], f"node {node!r}, mapped input {name!r}")  # type: ignore[valid-type]
        missing = [n for n in task.interface.required_inputs() if n not in inputs]
        if missing:
            raise CompileError(
                f"{self.label()}: node {node!r}: missing required input(s) {missing} of {what}; fix: map over "
                "them or bind them with functools.partial"
            )
        outputs = [("o0", mt.output_type)] if mt.output_type is not None else []
        self.nodes.append(
            ArrayNode(
                node,
                task.ref,
                inputs,
                list(kwargs),
                [TypedName(n, type_repr(t)) for n, t in outputs],
                task.options,
                mt.concurrency,
                mt.min_success_ratio,
            )
        )
        if not outputs:
            return None
        return Promise(self, OutputRef(node, "o0"), mt.output_type, f"output 'o0' of node {node!r}")

    # --- outputs -----------------------------------------------------------------------------------

    def bind_outputs(self, result: Any, outputs: list[tuple[str, Any]]) -> dict[str, Binding]:
        """Bind what the body returned to the declared outputs.

        Args:
            result: the body's return value.
            outputs: the declared ``(name, type)`` outputs.

        Returns:
            Output name -> binding.

        Raises:
            CompileError: wrong number of values, or a value that is neither a Promise nor a constant.
            TypeMismatch: a returned Promise or constant does not fit its output type.
        """
        if not outputs:
            if result is not None:
                raise CompileError(
                    f"{self.label()}: the body returns {result!r} but the return type declares no outputs; "
                    "fix: annotate the return type, or return nothing"
                )
            return {}
        if len(outputs) == 1:
            (name, tp), values = outputs[0], [result]
            if result is None:
                with contextlib.suppress(CompileError):
                    return {name: LiteralBinding(to_literal(None, tp))}
                raise CompileError(
                    f"{self.label()}: the body returns None but declares output {name!r} of type "
                    f"{type_repr(tp)}; fix: return a Promise or a value of that type"
                )
        else:
            if not isinstance(result, (tuple, list)) or isinstance(result, Promise):
                raise CompileError(
                    f"{self.label()}: the body must return {len(outputs)} values ({[n for n, _ in outputs]}) "
                    f"but returns {result!r}; fix: return a tuple of {len(outputs)} values"
                )
            if len(result) != len(outputs):
                raise CompileError(
                    f"{self.label()}: the body returns {len(result)} values but declares {len(outputs)} outputs "
                    f"{[n for n, _ in outputs]}; fix: return exactly {len(outputs)} values"
                )
            values = list(result)
        return {
            name: self.bind(value, tp, f"output {name!r}") for (name, tp), value in zip(outputs, values, strict=True)
        }

    def spec(
        self,
        inputs: list[TypedName],
        outputs: list[TypedName],
        output_bindings: dict[str, Binding],
        defaults: dict[str, bytes] | None = None,
        failure_policy: str = "fail_fast",
        max_parallelism: int | None = None,
        versioned: bool = True,
    ) -> WorkflowSpec:
        """Freeze what was built into a spec.

        Args:
            inputs: the scope's inputs.
            outputs: the scope's outputs.
            output_bindings: from ``bind_outputs``.
            defaults: literal defaults of optional inputs.
            failure_policy: ``fail_fast`` or ``finish_executable``.
            max_parallelism: the cap on concurrently running nodes.
            versioned: compute ``version`` (workflows) or leave it empty (dynamic sub-specs).

        Returns:
            The spec.
        """
        spec = WorkflowSpec(
            name=self.name,
            inputs=inputs,
            outputs=outputs,
            nodes=list(self.nodes),
            output_bindings=output_bindings,
            defaults=dict(defaults or {}),
            subworkflows=dict(sorted(self.subworkflows.items())),
            failure_policy=failure_policy,  # type: ignore[arg-type]
            max_parallelism=max_parallelism,
        )
        if versioned:
            spec = msgspec.structs.replace(spec, version=spec_version(spec))
        return spec
