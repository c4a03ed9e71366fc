"""Typed interfaces of tasks and workflows, read from a function's signature and type hints."""

from __future__ import annotations

import inspect
import typing
import warnings
from collections.abc import Callable
from typing import Any

from engine._artifacts import ArtifactQuery
from engine._literals import check_type, to_literal
from engine._types import is_namedtuple, is_optional, normalize_type, type_repr, unsupported_leaves
from engine.errors import CompileError, TypeMismatch
from engine.models import TypedName

__all__ = ["InputSpec", "Interface", "interface_of", "outputs_of"]

_NO_DEFAULT: Any = inspect.Parameter.empty


class InputSpec:
    """One input of an interface.

    Attributes:
        type: the annotated type.
        default: the default value (meaningful only when ``has_default``).
        has_default: whether the input may be left out.
    """

    __slots__ = ("default", "has_default", "type")

    def __init__(self, type: Any, default: Any = _NO_DEFAULT, has_default: bool = False) -> None:
        self.type = type
        self.default = default
        self.has_default = has_default

    def __repr__(self) -> str:
        default = f" = {self.default!r}" if self.has_default else ""
        return f"InputSpec({type_repr(self.type)}{default})"


class Interface:
    """The typed inputs and outputs of a task or workflow.

    Attributes:
        inputs: input name -> spec, in signature order.
        outputs: ``(name, type)`` per output: none for ``-> None``, ``o0`` for a single type, the field
            names of a ``typing.NamedTuple`` return type.
        output_tuple: the ``NamedTuple`` class when the return type is one, else ``None``.
    """

    __slots__ = ("inputs", "output_tuple", "outputs")

    def __init__(
        self,
        inputs: dict[str, InputSpec],
        outputs: list[tuple[str, Any]],
        output_tuple: type | None = None,
    ) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.output_tuple = output_tuple

    def required_inputs(self) -> list[str]:
        """The names of the inputs without a default.

        Returns:
            The names, in signature order.
        """
        return [name for name, spec in self.inputs.items() if not spec.has_default]

    def typed_inputs(self) -> list[TypedName]:
        """The inputs as spec entries.

        Returns:
            One ``TypedName`` per input.
        """
        return [
            TypedName(name, type_repr(spec.type), spec.has_default or is_optional(spec.type))
            for name, spec in self.inputs.items()
        ]

    def typed_outputs(self) -> list[TypedName]:
        """The outputs as spec entries.

        Returns:
            One ``TypedName`` per output.
        """
        return [TypedName(name, type_repr(tp), is_optional(tp)) for name, tp in self.outputs]

    def __repr__(self) -> str:
        outs = ", ".join(f"{n}: {type_repr(t)}" for n, t in self.outputs)
        return f"Interface(inputs={self.inputs!r}, outputs=[{outs}])"


def _hints(fn: Callable[..., Any], what: str, localns: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except NameError:
        if localns is None:
            raise
    try:
        return typing.get_type_hints(fn, localns=localns)
    except NameError as exc:
        raise CompileError(
            f"{what}: a type annotation cannot be resolved ({exc}); define the type before the function, "
            "at module level"
        ) from None


def outputs_of(
    return_type: Any, what: str, localns: dict[str, Any] | None = None
) -> tuple[list[tuple[str, Any]], type | None]:
    """Split a return annotation into named outputs.

    Args:
        return_type: the annotation (``None`` for no outputs).
        what: the task or workflow, for messages.
        localns: extra names to resolve a NamedTuple's forward references.

    Returns:
        The outputs and the NamedTuple class (or ``None``).
    """
    return_type = normalize_type(return_type)
    if return_type is type(None):
        return [], None
    if is_namedtuple(return_type):
        try:
            hints = typing.get_type_hints(return_type, localns=localns)
        except NameError as exc:
            raise CompileError(f"{what}: cannot resolve the fields of {return_type.__name__}: {exc}") from None
        fields = list(return_type._fields)
        missing = [f for f in fields if f not in hints]
        if missing:
            raise CompileError(
                f"{what}: output tuple {return_type.__name__} has untyped fields {missing}; use typing.NamedTuple "
                "with a type per field"
            )
        return [(f, hints[f]) for f in fields], return_type
    return [("o0", return_type)], None


def warn_fallback(tp: Any, what: str, stacklevel: int = 4) -> None:
    """Warn that values of ``tp`` (or of types nested in it) will be cloudpickled.

    Args:
        tp: a type annotation.
        what: where it is used (``task 'train', input 'model'``), for the message.
        stacklevel: passed to ``warnings.warn`` so that the warning points at the decorated function.
    """
    leaves = unsupported_leaves(tp)
    if leaves:
        names = ", ".join(sorted({type_repr(leaf) for leaf in leaves}))
        warnings.warn(
            f"{what}: type {type_repr(tp)} is not natively supported ({names}); its values will be "
            "cloudpickled, which is slower and not portable across Python versions; prefer a dataclass or "
            "msgspec.Struct",
            UserWarning,
            stacklevel=stacklevel,
        )


def interface_of(
    fn: Callable[..., Any],
    what: str,
    localns: dict[str, Any] | None = None,
    require_return: bool = False,
) -> tuple[Interface, bool]:
    """Read the interface of a function from its signature and type hints.

    Args:
        fn: the task or workflow function.
        what: ``task 'name'`` / ``workflow 'name'``, for messages.
        localns: the namespace the function was defined in, for annotations naming local classes.
        require_return: raise if the return annotation is missing.

    Returns:
        The interface, and whether the return type was annotated.

    Raises:
        CompileError: an argument has no annotation, or is ``*args``/``**kwargs``.
        TypeMismatch: a default does not fit its annotation.
    """
    hints = _hints(fn, what, localns)
    inputs: dict[str, InputSpec] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise CompileError(
                f"{what}: argument {name!r} is *args/**kwargs; inputs must be named and typed: replace it with "
                "explicit typed arguments"
            )
        if name not in hints:
            raise CompileError(
                f"{what}: argument {name!r} has no type annotation; every input must be typed, e.g. `{name}: int`"
            )
        tp = normalize_type(hints[name])
        check_type(tp, f"{what}, input {name!r}")
        if param.default is _NO_DEFAULT:
            inputs[name] = InputSpec(tp)
            continue
        if param.default is None and not is_optional(tp):
            tp = tp | None  # `x: int = None` means Optional, as in flytekit
        try:
            if not isinstance(param.default, ArtifactQuery):  # resolved at launch, typed then
                to_literal(param.default, tp)
        except CompileError as exc:
            raise TypeMismatch(f"{what}: default of argument {name!r} does not fit its type: {exc}") from None
        inputs[name] = InputSpec(tp, param.default, True)
    for name, spec in inputs.items():
        warn_fallback(spec.type, f"{what}, input {name!r}", stacklevel=5)
    if "return" not in hints:
        if require_return:
            raise CompileError(f"{what}: the return type is not annotated; add `-> T` (or `-> None`)")
        return Interface(inputs, []), False
    outputs, output_tuple = outputs_of(hints["return"], what, localns)
    for name, tp in outputs:
        check_type(tp, f"{what}, output {name!r}")
        warn_fallback(tp, f"{what}, output {name!r}", stacklevel=5)
    return Interface(inputs, outputs, output_tuple), True
