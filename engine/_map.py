"""``map_task``: run a task once per element of list inputs, as one array node."""

from __future__ import annotations

import functools
from typing import Any

from engine._compiler import Entity, current_context
from engine._task import Task
from engine.errors import CompileError, UnknownInput

__all__ = ["MapTask", "map_task"]


class MapTask(Entity):
    """A task mapped over lists; call it with the mapped list inputs as keywords.

    Attributes:
        task: the mapped task.
        fixed: inputs bound with ``functools.partial``, broadcast to every element.
        concurrency: how many elements may run at once (``None``: no limit beyond the execution's).
        min_success_ratio: the fraction of elements that must succeed; failed ones yield ``None``.
        output_type: ``list[Out]`` (``list[Out | None]`` when failures are tolerated), or ``None``.
    """

    def __init__(
        self, target: Task | functools.partial[Any], concurrency: int | None, min_success_ratio: float
    ) -> None:
        """Validate the target and options; use ``map_task`` rather than this constructor.

        Args:
            target: a task or ``functools.partial(task, **fixed)``.
            concurrency: see ``map_task``.
            min_success_ratio: see ``map_task``.
        """
        fixed: dict[str, Any] = {}
        if isinstance(target, functools.partial):
            if target.args:
                raise CompileError(
                    f"map_task: functools.partial of {target.func!r} binds positional arguments; bind inputs by "
                    "keyword, e.g. functools.partial(train, dataset=ds)"
                )
            fixed = dict(target.keywords)
            target = target.func
        if not isinstance(target, Task):
            raise CompileError(f"map_task takes a @task (or functools.partial of one), got {target!r}")
        if target.is_dynamic:
            raise CompileError(
                f"map_task: {target.name!r} is a @dynamic; map a @task, or loop over the inputs inside a @dynamic"
            )
        if target.options.publish:
            raise CompileError(
                f"map_task: task {target.name!r} publishes its outputs as {target.options.publish!r}, which its "
                "elements cannot do one by one; publish the map's list from a task downstream instead"
            )
        if len(target.interface.outputs) > 1:
            raise CompileError(
                f"map_task: task {target.name!r} has {len(target.interface.outputs)} outputs; a mapped task "
                "must have at most one: return a dataclass instead of a NamedTuple"
            )
        for name in fixed:
            if name not in target.interface.inputs:
                raise UnknownInput(
                    f"map_task: functools.partial binds {name!r}, which is not an input of task {target.name!r}; "
                    f"its inputs are {list(target.interface.inputs)}"
                )
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise CompileError(
                f"map_task of {target.name!r}: concurrency must be None or an int >= 1, got {concurrency!r}"
            )
        if not 0.0 < float(min_success_ratio) <= 1.0:
            raise CompileError(
                f"map_task of {target.name!r}: min_success_ratio must be in (0, 1], got {min_success_ratio!r}"
            )
        self.task = target
        self.fixed = fixed
        self.concurrency = concurrency
        self.min_success_ratio = float(min_success_ratio)
        self.name = f"map_{target.name}"
        self.output_type: Any = None
        if target.interface.outputs:
            out = target.interface.outputs[0][1]
            self.output_type = list[out | None] if self.min_success_ratio < 1.0 else list[out]  # type: ignore[valid-type]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = current_context()
        if ctx is not None:
            return ctx.call_map(self, args, kwargs)
        return self._run_locally(args, kwargs)

    def _run_locally(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any] | None:
        if args:
            raise CompileError(f"{self.name}: pass each mapped list by keyword, e.g. (x=[1, 2, 3])")
        lengths = {name: len(value) for name, value in kwargs.items()}
        if len(set(lengths.values())) > 1:
            raise CompileError(f"{self.name}: mapped inputs must have equal lengths, got {lengths}")
        size = next(iter(lengths.values()), 0)
        results: list[Any] = []
        failures = 0
        for i in range(size):
            try:
                results.append(self.task.fn(**self.fixed, **{name: value[i] for name, value in kwargs.items()}))
            except Exception:
                if self.min_success_ratio >= 1.0:
                    raise
                failures += 1
                results.append(None)
        if size and (size - failures) / size < self.min_success_ratio:
            raise RuntimeError(
                f"{self.name}: {failures} of {size} elements failed, more than min_success_ratio="
                f"{self.min_success_ratio} allows"
            )
        return results if self.output_type is not None else None

    def describe(self) -> str:
        """How compile errors name it: ``map_task of 'fit'``.

        Returns:
            The description.
        """
        return f"map_task of {self.task.name!r}"

    def __repr__(self) -> str:
        return f"<map_task {self.task.name} concurrency={self.concurrency} min_success_ratio={self.min_success_ratio}>"


def map_task(
    t: Task | functools.partial[Any],
    concurrency: int | None = None,
    min_success_ratio: float = 1.0,
) -> MapTask:
    """Map a task over list inputs: ``map_task(train)(x=[1, 2, 3])``.

    Inputs passed in the call are lists mapped element-wise (equal lengths); inputs bound with
    ``functools.partial(task, **fixed)`` are broadcast to every element. The result is the list of
    element outputs.

    Args:
        t: a ``@task`` or ``functools.partial`` of one.
        concurrency: the most elements running at once.
        min_success_ratio: the fraction of elements that must succeed (failed ones give ``None``).

    Returns:
        A callable that, inside a workflow/dynamic, adds an array node and returns a Promise of the
        list of outputs; outside one, runs the elements in-process and returns the list.

    Raises:
        CompileError: ``t`` is not a task, or an option is invalid.
        UnknownInput: ``functools.partial`` binds a name that is not an input.
    """
    return MapTask(t, concurrency, min_success_ratio)
