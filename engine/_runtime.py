"""What executors need at run time: find a task's code, decode its inputs, encode its outputs, expand
a ``@dynamic`` body into a sub-spec."""

from __future__ import annotations

import importlib
from typing import Any

from engine._compiler import CompileContext
from engine._literals import from_literal, to_literal
from engine._task import Task
from engine._workflow import Workflow
from engine.errors import CompileError, ConfigError, TypeMismatch, UnknownInput
from engine.models import TaskRef, WorkflowSpec

__all__ = ["decode_inputs", "encode_outputs", "expand_dynamic", "load_task", "load_workflow"]


def _walk(module_name: str, qualname: str, kind: str) -> Any:
    if "<locals>" in qualname:
        raise ConfigError(
            f"{kind} {module_name}.{qualname} is defined inside a function and cannot be imported; define it at "
            "module level"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import module {module_name!r} of {kind} {qualname!r} ({exc}); make the module importable "
            "where tasks run (install the package or put it on PYTHONPATH)"
        ) from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"{kind} {qualname!r} not found in module {module_name!r}; was it renamed or removed since the "
                "workflow was compiled?"
            ) from None
    return obj


def load_task(ref: TaskRef) -> Task:
    """Find the ``Task`` a reference points to.

    Args:
        ref: the reference from a node of the spec.

    Returns:
        The task: unpickled from ``ref.pickled`` when set, else imported by module and qualname.

    Raises:
        ConfigError: the task cannot be found (the message says how to make it importable).
    """
    if ref.pickled is not None:
        import cloudpickle

        obj = cloudpickle.loads(ref.pickled)
    else:
        obj = _walk(ref.module, ref.qualname, "task")
    if not isinstance(obj, Task):
        raise ConfigError(f"{ref.module}.{ref.qualname} is a {type(obj).__name__}, not a @task; decorate it with @task")
    return obj


def load_workflow(module: str, qualname: str) -> Workflow:
    """Import a workflow by module and qualified name.

    Args:
        module: the module, e.g. ``examples.knn``.
        qualname: the workflow's name in it, e.g. ``wf``.

    Returns:
        The workflow.

    Raises:
        ConfigError: the module or name does not exist, or is not a ``@workflow``.
    """
    obj = _walk(module, qualname, "workflow")
    if not isinstance(obj, Workflow):
        raise ConfigError(f"{module}.{qualname} is a {type(obj).__name__}, not a @workflow; decorate it with @workflow")
    return obj


def decode_inputs(task: Task, literals: dict[str, bytes]) -> dict[str, Any]:
    """Decode a task's input literals; absent optional inputs take their defaults.

    Args:
        task: the task.
        literals: input name -> literal.

    Returns:
        Input name -> Python value, for every input.

    Raises:
        UnknownInput: a literal names no input.
        CompileError: a required input is absent.
        TypeMismatch: a literal does not decode to its input's type.
    """
    for name in literals:
        if name not in task.interface.inputs:
            raise UnknownInput(
                f"task {task.name!r} has no input {name!r}; its inputs are {list(task.interface.inputs)}"
            )
    values: dict[str, Any] = {}
    for name, spec in task.interface.inputs.items():
        if name in literals:
            try:
                values[name] = from_literal(literals[name], spec.type)
            except TypeMismatch as exc:
                raise TypeMismatch(f"task {task.name!r}, input {name!r}: {exc}") from None
        elif spec.has_default:
            values[name] = spec.default
        else:
            raise CompileError(f"task {task.name!r}: required input {name!r} was not provided")
    return values


def encode_outputs(task: Task, result: Any) -> dict[str, bytes]:
    """Encode what a task returned into output literals.

    Args:
        task: the task.
        result: its return value.

    Returns:
        Output name -> literal (empty for a task without outputs).

    Raises:
        TypeMismatch: the value does not fit the declared outputs (names the task and the output).
    """
    outputs = task.interface.outputs
    what = f"task {task.name!r}"
    if not outputs:
        if result is not None:
            hint = "annotate its return type" if not task.returns_annotated else "return None"
            raise TypeMismatch(f"{what} returned {type(result).__name__} but declares no outputs; fix: {hint}")
        return {}
    if len(outputs) == 1 and task.interface.output_tuple is None:
        values = [result]
    else:
        if not isinstance(result, tuple) or len(result) != len(outputs):
            raise TypeMismatch(
                f"{what} must return a tuple of {len(outputs)} values {[n for n, _ in outputs]}, "
                f"got {type(result).__name__}"
            )
        values = list(result)
    literals: dict[str, bytes] = {}
    for (name, tp), value in zip(outputs, values, strict=True):
        try:
            literals[name] = to_literal(value, tp)
        except CompileError as exc:
            raise TypeMismatch(f"{what}, output {name!r}: {exc}") from None
    return literals


def expand_dynamic(task: Task, inputs: dict[str, Any]) -> WorkflowSpec:
    """Run a ``@dynamic`` body with concrete inputs and return the sub-spec it builds.

    Args:
        task: the dynamic task.
        inputs: input name -> Python value (absent optional inputs take their defaults).

    Returns:
        A spec with no inputs, the dynamic's outputs bound from its nodes (or to constants), and
        ``version=""``.

    Raises:
        CompileError: the task is not dynamic, or its body builds an invalid graph.
    """
    if not task.is_dynamic:
        raise CompileError(f"task {task.name!r} is not a @dynamic; only dynamic tasks expand into a sub-workflow")
    for name in inputs:
        if name not in task.interface.inputs:
            raise UnknownInput(
                f"dynamic {task.name!r} has no input {name!r}; its inputs are {list(task.interface.inputs)}"
            )
    kwargs: dict[str, Any] = {}
    for name, spec in task.interface.inputs.items():
        if name in inputs:
            kwargs[name] = inputs[name]
        elif spec.has_default:
            kwargs[name] = spec.default
        else:
            raise CompileError(f"dynamic {task.name!r}: required input {name!r} was not provided")
    ctx = CompileContext(task.name, "dynamic")
    result = ctx.run_body(task.fn, kwargs)
    bindings = ctx.bind_outputs(result, task.interface.outputs)
    return ctx.spec([], task.interface.typed_outputs(), bindings, versioned=False)
