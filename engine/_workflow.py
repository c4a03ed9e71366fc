"""``@workflow``: a DAG of tasks, compiled once at decoration time into a ``WorkflowSpec``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, overload

import msgspec

from engine._artifacts import ArtifactQuery
from engine._compiler import CompileContext, Entity, current_context
from engine._files import Dir, File
from engine._interface import Interface, interface_of
from engine._literals import from_literal, to_literal
from engine._promise import Promise
from engine._task import _caller_locals
from engine._types import is_optional, strip_optional, type_repr
from engine.errors import CompileError, TypeMismatch, UnknownInput

__all__ = ["Workflow", "workflow"]

_FAILURE_POLICIES = ("fail_fast", "finish_executable")


def _inferred_outputs(result: Any) -> list[tuple[str, Any]]:
    """Output types of an unannotated workflow, from what its body returned."""
    if result is None:
        return []
    values = list(result) if isinstance(result, tuple) else [result]
    return [(f"o{i}", v._type if isinstance(v, Promise) else type(v)) for i, v in enumerate(values)]


def _parse_json(text: str, tp: Any) -> Any:
    try:
        return msgspec.json.decode(text, type=tp)
    except (msgspec.ValidationError, msgspec.DecodeError):
        # dates, enums, UUIDs... are JSON strings: accept them unquoted too (--when 2024-01-02)
        try:
            return msgspec.json.decode(msgspec.json.encode(text), type=tp)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        raise


class Workflow(Entity):
    """A compiled workflow.

    Attributes:
        name: the function's ``__name__``.
        fn: the workflow body.
        interface: typed inputs and outputs.
        spec: the compiled ``WorkflowSpec``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        failure_policy: str = "fail_fast",
        max_parallelism: int | None = None,
        localns: dict[str, Any] | None = None,
    ) -> None:
        """Compile ``fn``; use ``@workflow`` rather than this constructor.

        Args:
            fn: the workflow body.
            failure_policy: ``fail_fast`` or ``finish_executable``.
            max_parallelism: the most nodes running at once.
            localns: the namespace it was defined in, to resolve annotations of local classes.

        Raises:
            CompileError: the workflow is invalid (the message says where and how to fix it).
        """
        self.fn = fn
        self.name: str = fn.__name__
        what = f"workflow {self.name!r}"
        if inspect.iscoroutinefunction(fn):
            raise CompileError(f"{what}: a workflow body builds a graph and cannot be async; make it a plain def")
        if failure_policy not in _FAILURE_POLICIES:
            raise CompileError(f"{what}: failure_policy must be one of {_FAILURE_POLICIES}, got {failure_policy!r}")
        if max_parallelism is not None and (
            isinstance(max_parallelism, bool) or not isinstance(max_parallelism, int) or max_parallelism < 1
        ):
            raise CompileError(f"{what}: max_parallelism must be None or an int >= 1, got {max_parallelism!r}")
        interface, annotated = interface_of(fn, what, localns)
        ctx = CompileContext(self.name, "workflow")
        result = ctx.run_body(fn, {name: ctx.input_promise(name, s.type) for name, s in interface.inputs.items()})
        if not annotated:
            interface = Interface(interface.inputs, _inferred_outputs(result))
        bindings = ctx.bind_outputs(result, interface.outputs)
        unused = [n for n in interface.required_inputs() if n not in ctx.used_inputs]
        if unused:
            raise CompileError(
                f"{what}: required input(s) {unused} are used by no node and no output; fix: pass them to a "
                "task, give them a default, or remove them"
            )
        self.interface = interface
        # an input defaulting to an ArtifactQuery has no literal default: `Engine.launch` asks the catalog
        self.artifact_defaults = {
            n: s.default for n, s in interface.inputs.items() if s.has_default and isinstance(s.default, ArtifactQuery)
        }
        defaults = {
            n: to_literal(s.default, s.type)
            for n, s in interface.inputs.items()
            if s.has_default and n not in self.artifact_defaults
        }
        self.spec = ctx.spec(
            interface.typed_inputs(),
            interface.typed_outputs(),
            bindings,
            defaults,
            failure_policy,
            max_parallelism,
        )
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__
        self.__qualname__ = fn.__qualname__
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = current_context()
        if ctx is not None:
            return ctx.call_workflow(self, args, kwargs)
        if args:
            raise CompileError(
                f"workflow {self.name!r}: pass inputs by keyword: {self.name}("
                f"{', '.join(f'{n}=...' for n in self.interface.inputs)})"
            )
        from engine._engine import run_locally

        return run_locally(self, kwargs)

    def describe(self) -> str:
        """How compile errors name it: ``workflow 'wf'``.

        Returns:
            The description.
        """
        return f"{type(self).__name__.lower()} {self.name!r}"

    def __repr__(self) -> str:
        return f"<workflow {self.fn.__module__}.{self.fn.__qualname__} version={self.spec.version[:12]}>"

    # --- values in and out -------------------------------------------------------------------------

    def encode_inputs(self, kwargs: dict[str, Any]) -> dict[str, bytes]:
        """Validate and encode the inputs of an execution, before anything runs.

        Args:
            kwargs: input name -> Python value.

        Returns:
            Input name -> literal, for every input (defaults filled in).

        Raises:
            UnknownInput: a name is not an input.
            TypeMismatch: a value does not fit its input's type.
            CompileError: a required input is missing.
        """
        what = f"workflow {self.name!r}"
        for name in kwargs:
            if name not in self.interface.inputs:
                raise UnknownInput(f"{what} has no input {name!r}; its inputs are {list(self.interface.inputs)}")
        missing = [n for n in self.interface.required_inputs() if n not in kwargs]
        if missing:
            raise CompileError(
                f"{what}: missing required input(s) {missing}; pass {', '.join(f'{m}=...' for m in missing)}"
            )
        literals: dict[str, bytes] = {}
        for name, spec in self.interface.inputs.items():
            if isinstance(kwargs.get(name), ArtifactQuery) or (name not in kwargs and name in self.artifact_defaults):
                continue  # resolved from the catalog at launch (`artifact_inputs`)
            if name in kwargs:
                try:
                    literals[name] = to_literal(kwargs[name], spec.type)
                except CompileError as exc:
                    raise TypeMismatch(f"{what}, input {name!r}: {exc}") from None
            else:
                literals[name] = self.spec.defaults[name]
        return literals

    def artifact_inputs(self, kwargs: dict[str, Any]) -> dict[str, ArtifactQuery]:
        """The inputs to resolve from the catalog: given as an `ArtifactQuery`, or defaulting to one."""
        queries = {name: query for name, query in self.artifact_defaults.items() if name not in kwargs}
        queries.update({name: value for name, value in kwargs.items() if isinstance(value, ArtifactQuery)})
        return queries

    def decode_outputs(self, outputs: dict[str, bytes]) -> Any:
        """Turn an execution's output literals into the Python value the workflow returns.

        Args:
            outputs: output name -> literal.

        Returns:
            ``None`` with no outputs, the value of a single output, a NamedTuple instance (or a tuple
            for an unannotated workflow returning several values).

        Raises:
            TypeMismatch: an output is missing or does not decode to its type.
        """
        values = []
        for name, tp in self.interface.outputs:
            if name not in outputs:
                raise TypeMismatch(f"workflow {self.name!r}: output {name!r} is missing from the execution's outputs")
            values.append(from_literal(outputs[name], tp))
        if not values:
            return None
        if self.interface.output_tuple is not None:
            return self.interface.output_tuple(*values)
        return values[0] if len(values) == 1 else tuple(values)

    def parse_cli_inputs(self, raw: dict[str, str]) -> dict[str, Any]:
        """Parse command-line strings by the interface types.

        ``int``, ``float``, ``bool`` and ``str`` are parsed directly; ``File``/``Dir`` accept a bare
        path; everything else is JSON (``--features '["a", "b"]'``).

        Args:
            raw: input name -> the string given on the command line.

        Returns:
            Input name -> Python value.

        Raises:
            UnknownInput: a name is not an input.
            TypeMismatch: a string does not parse as its input's type.
        """
        what = f"workflow {self.name!r}"
        parsed: dict[str, Any] = {}
        for name, text in raw.items():
            spec = self.interface.inputs.get(name)
            if spec is None:
                raise UnknownInput(f"{what} has no input {name!r}; its inputs are {list(self.interface.inputs)}")
            tp = strip_optional(spec.type)
            try:
                if is_optional(spec.type) and text.strip().lower() in ("none", "null"):
                    parsed[name] = None
                elif tp is bool:
                    lowered = text.strip().lower()
                    if lowered not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError("expected true/false")
                    parsed[name] = lowered in ("true", "1", "yes")
                elif tp in (int, float):
                    parsed[name] = tp(text)
                elif tp is str:
                    parsed[name] = text
                elif tp in (File, Dir) and not text.lstrip().startswith("{"):
                    parsed[name] = tp(text)
                else:
                    parsed[name] = _parse_json(text, spec.type)
            except (ValueError, msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise TypeMismatch(
                    f"{what}, input {name!r}: cannot parse {text!r} as {type_repr(spec.type)} ({exc}); "
                    "non-scalar inputs are given as JSON"
                ) from None
        return parsed


@overload
def workflow(fn: Callable[..., Any], /) -> Workflow: ...
@overload
def workflow(
    fn: None = None, *, failure_policy: str = "fail_fast", max_parallelism: int | None = None
) -> Callable[[Callable[..., Any]], Workflow]: ...


def workflow(
    fn: Callable[..., Any] | None = None,
    *,
    failure_policy: str = "fail_fast",
    max_parallelism: int | None = None,
) -> Workflow | Callable[[Callable[..., Any]], Workflow]:
    """Compile a function into a workflow: ``@workflow`` or ``@workflow(failure_policy=...)``.

    The body runs once, now, with a Promise per input; task calls add nodes. Calling the workflow
    later (outside another workflow) runs it locally and returns its value.

    Args:
        fn: the function (when used bare).
        failure_policy: ``fail_fast`` (stop at the first failed node) or ``finish_executable`` (run
            every node that does not depend on a failed one).
        max_parallelism: the most nodes running at once.

    Returns:
        The ``Workflow`` (or a decorator making one).

    Raises:
        CompileError: the workflow is invalid; ``TypeMismatch`` and ``UnknownInput`` are subclasses.
    """
    if fn is not None:
        return Workflow(fn, failure_policy=failure_policy, max_parallelism=max_parallelism, localns=_caller_locals(1))

    def decorate(f: Callable[..., Any]) -> Workflow:
        return Workflow(f, failure_policy=failure_policy, max_parallelism=max_parallelism, localns=_caller_locals(1))

    return decorate
