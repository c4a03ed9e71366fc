"""``@task`` and ``@dynamic``: typed Python functions that become nodes of a workflow."""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import inspect
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn, overload

import msgspec

from engine._compiler import Entity, current_context
from engine._interface import Interface, interface_of
from engine.errors import CompileError, InvalidResources
from engine.models import Resources, TaskOptions, TaskRef

__all__ = ["Task", "dynamic", "dynamic_source_hash", "source_hash", "task"]


def source_hash(fn: Callable[..., Any]) -> str:
    """The sha256 of a function's source (of its code object when the source is unavailable).

    Args:
        fn: the function.

    Returns:
        The hex digest.
    """
    try:
        return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()
    except (OSError, TypeError):
        digest = hashlib.sha256()
        _hash_code(fn.__code__, digest)
        return digest.hexdigest()


def _hash_code(code: types.CodeType, digest: Any) -> None:
    """Feed a code object to ``digest`` without anything process-specific (a nested code object's
    ``repr`` holds its memory address, so nested code is hashed recursively instead)."""
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(const, digest)
        else:
            digest.update(repr(const).encode())


def _referenced_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    yield from code.co_freevars
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _referenced_names(const)


def dynamic_source_hash(task: Task, _seen: set[int] | None = None) -> str:
    """The source hash of a ``@dynamic`` together with what its body calls.

    A dynamic's sub-spec is built by its body at run time, so the workflow version must change when
    a task it calls changes, not only when its own source does. Tasks, workflows and map tasks the
    body names (globals or closure) are folded in, recursively through nested dynamics.
    """
    seen = _seen if _seen is not None else set()
    seen.add(id(task))
    fn = task.fn
    scope = dict(fn.__globals__)
    if fn.__closure__:
        scope.update(zip(fn.__code__.co_freevars, (cell.cell_contents for cell in fn.__closure__), strict=False))
    digest = hashlib.sha256(task.ref.source_hash.encode())
    for name in sorted(set(_referenced_names(fn.__code__))):
        value = scope.get(name)
        target = getattr(value, "task", None) if not isinstance(value, Task) else value  # map_task
        if isinstance(value, functools.partial):
            target = value.func
        if isinstance(target, Task) and id(target) not in seen:
            nested = dynamic_source_hash(target, seen) if target.is_dynamic else target.ref.source_hash
            digest.update(f"{name}={nested}".encode())
        elif hasattr(value, "spec") and hasattr(value, "encode_inputs"):  # a workflow
            digest.update(f"{name}={value.spec.version}".encode())
    return digest.hexdigest()


def _options(
    what: str,
    interface: Interface,
    *,
    cache: bool,
    cache_version: str,
    cache_serialize: bool,
    cache_ignore_inputs: Iterable[str],
    retries: int,
    timeout: float | datetime.timedelta | None,
    resources: Resources | None,
    executor: str | None,
    secrets: Iterable[str],
    cache_ttl: float | datetime.timedelta | None = None,
    publish: str | None = None,
    partitions: Iterable[str] = (),
) -> TaskOptions:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise CompileError(f"{what}: retries must be an int >= 0, got {retries!r}")
    seconds: float | None
    if timeout is None:
        seconds = None
    elif isinstance(timeout, datetime.timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float(timeout)
    else:
        raise CompileError(f"{what}: timeout must be seconds or a datetime.timedelta, got {timeout!r}")
    if seconds is not None and seconds <= 0:
        raise CompileError(f"{what}: timeout must be positive, got {timeout!r}")
    if resources is not None and not isinstance(resources, Resources):
        _reject_resources(what, resources)
    if executor is not None and not isinstance(executor, str):
        raise CompileError(f"{what}: executor must be a plugin name such as 'local' or 'ray', got {executor!r}")
    if isinstance(secrets, str) or isinstance(cache_ignore_inputs, str):
        raise CompileError(f"{what}: secrets and cache_ignore_inputs take a list of names, not one string")
    ignored = tuple(cache_ignore_inputs)
    unknown = [n for n in ignored if n not in interface.inputs]
    if unknown:
        raise CompileError(
            f"{what}: cache_ignore_inputs names {unknown}, which are not inputs; "
            f"its inputs are {list(interface.inputs)}"
        )
    if (cache_serialize or cache_ttl is not None or cache_version or ignored) and not cache:
        raise CompileError(
            f"{what}: cache_version, cache_serialize, cache_ttl and cache_ignore_inputs only apply to a cached "
            "task: add cache=True"
        )
    ttl = _seconds(what, "cache_ttl", cache_ttl)
    if publish is not None and (not isinstance(publish, str) or not publish):
        raise CompileError(f"{what}: publish names the artifact, a non-empty string; got {publish!r}")
    if isinstance(partitions, str):
        raise CompileError(f"{what}: partitions takes a list of input names, not one string")
    partition_names = tuple(partitions)
    if partition_names and not publish:
        raise CompileError(f"{what}: partitions apply to a published artifact: add publish='<name>'")
    unknown_partitions = [n for n in partition_names if n not in interface.inputs]
    if unknown_partitions:
        raise CompileError(
            f"{what}: partitions names {unknown_partitions}, which are not inputs; its inputs are "
            f"{list(interface.inputs)}"
        )
    return TaskOptions(
        retries=retries,
        timeout=seconds,
        cache=bool(cache),
        cache_version=str(cache_version),
        cache_serialize=bool(cache_serialize),
        cache_ignore_inputs=ignored,
        resources=resources if resources is not None else Resources(),
        executor=executor,
        secrets=tuple(secrets),
        cache_interface=_interface_hash(interface) if cache or publish else "",
        cache_ttl=ttl,
        publish=publish or "",
        partitions=partition_names,
    )


def _seconds(what: str, option: str, value: float | datetime.timedelta | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise CompileError(f"{what}: {option} must be seconds or a datetime.timedelta, got {value!r}")
    if seconds <= 0:
        raise CompileError(f"{what}: {option} must be positive, got {value!r}")
    return seconds


def _interface_hash(interface: Interface) -> str:
    """The hash of a task's typed signature, part of its cache key: names and types of its
    inputs and outputs (a renamed or retyped one misses the cache)."""
    typed = [[t.name, t.type] for t in interface.typed_inputs()], [[t.name, t.type] for t in interface.typed_outputs()]
    return hashlib.sha256(msgspec.json.encode(typed)).hexdigest()[:32]


def _reject_resources(what: str, resources: object) -> NoReturn:
    """Raise the error for a ``resources=`` that is not an ``engine.Resources``, naming the call to write.

    A dict is not converted: one spelling, checked where it is written (``Resources(...)`` validates
    itself), is easier to read and search for than two.
    """
    if not isinstance(resources, dict):
        raise CompileError(f"{what}: resources must be engine.Resources(cpu=..., mem=..., gpu=...), got {resources!r}")
    unknown = sorted(str(k) for k in resources if k not in Resources.__struct_fields__)
    if unknown:
        raise CompileError(
            f"{what}: resources={resources!r} has unknown key(s) {unknown}; write "
            "resources=engine.Resources(cpu=..., mem=..., gpu=...) with only those three"
        )
    try:
        Resources(**resources)
    except InvalidResources as exc:
        raise CompileError(f"{what}: resources must be engine.Resources(...), not a dict; and {exc}") from exc
    spelled = ", ".join(f"{k}={v!r}" for k, v in resources.items())
    raise CompileError(f"{what}: resources must be engine.Resources, not a dict: write resources=Resources({spelled})")


def _pickle_by_value(obj: Any) -> bytes:
    """cloudpickle ``obj``, dropping msgspec's per-class caches from classes pickled by value.

    msgspec stores a ``__msgspec_cache__`` on dataclasses it has encoded; the cache cannot be pickled
    and is rebuilt on next use, so it is removed rather than shipped.
    """
    import io

    import cloudpickle

    class _Pickler(cloudpickle.Pickler):
        def reducer_override(self, o: Any) -> Any:
            if isinstance(o, type) and "__msgspec_cache__" in o.__dict__:
                with contextlib.suppress(AttributeError, TypeError):
                    delattr(o, "__msgspec_cache__")
            return super().reducer_override(o)

    buf = io.BytesIO()
    _Pickler(buf).dump(obj)
    return buf.getvalue()


class Task(Entity):
    """A typed function that runs as one node of a workflow.

    Called inside a ``@workflow``/``@dynamic`` body it adds a node and returns Promises; called
    anywhere else it simply runs the function.

    Attributes:
        name: the function's ``__name__``.
        fn: the function.
        is_dynamic: made by ``@dynamic``: its body builds a sub-workflow at run time.
        is_async: the function is a coroutine function.
        interface: typed inputs and outputs.
        options: execution options (retries, timeout in seconds, cache, resources...).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        is_dynamic: bool = False,
        localns: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """Wrap ``fn``; use ``@task``/``@dynamic`` rather than this constructor.

        Args:
            fn: the function.
            is_dynamic: whether it is a ``@dynamic``.
            localns: the namespace it was defined in, to resolve annotations of local classes.
            **options: the task options (see ``task``).
        """
        if not callable(fn) or not hasattr(fn, "__code__"):
            raise CompileError(f"@task/@dynamic decorates a function, got {fn!r}")
        self.fn = fn
        self.name: str = fn.__name__
        self.is_dynamic = is_dynamic
        self.is_async = inspect.iscoroutinefunction(fn)
        what = f"{'dynamic' if is_dynamic else 'task'} {self.name!r}"
        if is_dynamic and self.is_async:
            raise CompileError(f"{what}: a @dynamic body builds a graph and cannot be async; make it a plain def")
        self.interface, self.returns_annotated = interface_of(fn, what, localns)
        self.options = _options(what, self.interface, **options)
        self._ref: TaskRef | None = None
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    @property
    def ref(self) -> TaskRef:
        """Where to find this task's code; cloudpickled when its module cannot be imported elsewhere."""
        if self._ref is None:
            module = self.fn.__module__
            qualname = self.fn.__qualname__
            pickled = None
            if module == "__main__" or "<locals>" in qualname:
                pickled = _pickle_by_value(self)
            self._ref = TaskRef(self.name, module, qualname, source_hash(self.fn), pickled, is_async=self.is_async)
        return self._ref

    def node_ref(self) -> TaskRef:
        """The ref a node of this task records: for a ``@dynamic``, its source hash also covers what its
        body calls (``dynamic_source_hash``), since its sub-spec is only built at run time.

        Returns:
            ``ref``, with the dynamic source hash for a ``@dynamic``.
        """
        if not self.is_dynamic:
            return self.ref
        return msgspec.structs.replace(self.ref, source_hash=dynamic_source_hash(self))

    def describe(self) -> str:
        """How compile errors name it: ``task 'fit'``.

        Returns:
            The description.
        """
        return f"{type(self).__name__.lower()} {self.name!r}"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ref"] = None  # the ref may hold this very task pickled
        state.pop("__wrapped__", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__wrapped__ = self.fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = current_context()
        if ctx is not None:
            return ctx.call_task(self, args, kwargs)
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        kind = "dynamic" if self.is_dynamic else "task"
        return f"<{kind} {self.fn.__module__}.{self.fn.__qualname__}>"


def _caller_locals(depth: int) -> dict[str, Any] | None:
    try:
        frame = sys._getframe(depth + 1)
    except ValueError:
        return None
    return None if frame.f_code.co_name == "<module>" else dict(frame.f_locals)


def _decorator(
    fn: Callable[..., Any] | None, *, is_dynamic: bool, options: dict[str, Any]
) -> Task | Callable[[Callable[..., Any]], Task]:
    """``@task``/``@dynamic`` used bare (``fn`` given) or with options (return the decorator).

    Type hints are resolved in the namespace of the code applying the decorator: two frames up when
    called bare from ``task``/``dynamic``, one frame up from ``decorate``.
    """
    if fn is not None:
        return Task(fn, is_dynamic=is_dynamic, localns=_caller_locals(2), **options)

    def decorate(f: Callable[..., Any]) -> Task:
        return Task(f, is_dynamic=is_dynamic, localns=_caller_locals(1), **options)

    return decorate


@overload
def task(fn: Callable[..., Any], /) -> Task: ...
@overload
def task(
    fn: None = None,
    *,
    cache: bool = False,
    cache_version: str = "",
    cache_serialize: bool = False,
    cache_ignore_inputs: Iterable[str] = (),
    cache_ttl: float | datetime.timedelta | None = None,
    publish: str | None = None,
    partitions: Iterable[str] = (),
    retries: int = 0,
    timeout: float | datetime.timedelta | None = None,
    resources: Resources | None = None,
    executor: str | None = None,
    secrets: Iterable[str] = (),
) -> Callable[[Callable[..., Any]], Task]: ...


def task(
    fn: Callable[..., Any] | None = None,
    *,
    cache: bool = False,
    cache_version: str = "",
    cache_serialize: bool = False,
    cache_ignore_inputs: Iterable[str] = (),
    cache_ttl: float | datetime.timedelta | None = None,
    publish: str | None = None,
    partitions: Iterable[str] = (),
    retries: int = 0,
    timeout: float | datetime.timedelta | None = None,
    resources: Resources | None = None,
    executor: str | None = None,
    secrets: Iterable[str] = (),
) -> Task | Callable[[Callable[..., Any]], Task]:
    """Make a typed function a task: ``@task`` or ``@task(retries=2, ...)``.

    Args:
        fn: the function (when used bare).
        cache: memoize outputs in the catalog: a later run with the same task (name,
            ``cache_version``, typed signature) and equal inputs, in the same project and domain,
            reuses them instead of running (``NodeCacheHit``); map elements are cached one by one.
        cache_version: bump to invalidate cached outputs.
        cache_serialize: only one execution computes a given cache key; the others wait for it.
        cache_ignore_inputs: inputs left out of the cache key.
        cache_ttl: seconds (or a ``timedelta``) after which a cached output is no longer reused.
        publish: also publish the outputs as a named artifact in the catalog, found with
            ``catalog.query(name, partitions)`` or an ``ArtifactQuery`` workflow input.
        partitions: inputs whose values partition the published artifact (``["region"]``).
        retries: retries on user errors.
        timeout: seconds (or a ``timedelta``) before an attempt is cancelled.
        resources: CPUs, memory and GPUs the task needs.
        executor: the executor plugin to run it on (``"local"``, ``"ray"``...).
        secrets: names of secrets exposed through ``engine.current_context().secrets``.

    Returns:
        The ``Task`` (or a decorator making one).

    Raises:
        CompileError: an argument is untyped or an option is invalid.
    """
    options = dict(
        cache=cache,
        cache_version=cache_version,
        cache_serialize=cache_serialize,
        cache_ignore_inputs=cache_ignore_inputs,
        cache_ttl=cache_ttl,
        publish=publish,
        partitions=partitions,
        retries=retries,
        timeout=timeout,
        resources=resources,
        executor=executor,
        secrets=secrets,
    )
    return _decorator(fn, is_dynamic=False, options=options)


@overload
def dynamic(fn: Callable[..., Any], /) -> Task: ...
@overload
def dynamic(
    fn: None = None,
    *,
    cache: bool = False,
    cache_version: str = "",
    cache_serialize: bool = False,
    cache_ignore_inputs: Iterable[str] = (),
    cache_ttl: float | datetime.timedelta | None = None,
    publish: str | None = None,
    partitions: Iterable[str] = (),
    retries: int = 0,
    timeout: float | datetime.timedelta | None = None,
    resources: Resources | None = None,
    executor: str | None = None,
    secrets: Iterable[str] = (),
) -> Callable[[Callable[..., Any]], Task]: ...


def dynamic(
    fn: Callable[..., Any] | None = None,
    *,
    cache: bool = False,
    cache_version: str = "",
    cache_serialize: bool = False,
    cache_ignore_inputs: Iterable[str] = (),
    cache_ttl: float | datetime.timedelta | None = None,
    publish: str | None = None,
    partitions: Iterable[str] = (),
    retries: int = 0,
    timeout: float | datetime.timedelta | None = None,
    resources: Resources | None = None,
    executor: str | None = None,
    secrets: Iterable[str] = (),
) -> Task | Callable[[Callable[..., Any]], Task]:
    """Make a function a dynamic workflow: its body runs at execution time with concrete inputs.

    Inside, loop, branch and index over the inputs freely; task calls still return Promises and
    build a sub-workflow that runs as children of the dynamic node. Options are those of ``task``.

    Args:
        fn: the function (when used bare).
        cache: see ``task``.
        cache_version: see ``task``.
        cache_serialize: see ``task``.
        cache_ignore_inputs: see ``task``.
        cache_ttl: see ``task``.
        publish: see ``task``.
        partitions: see ``task``.
        retries: see ``task``.
        timeout: see ``task``.
        resources: see ``task``.
        executor: see ``task``.
        secrets: see ``task``.

    Returns:
        The ``Task`` with ``is_dynamic=True`` (or a decorator making one).

    Raises:
        CompileError: an argument is untyped, an option is invalid, or the function is async.
    """
    options = dict(
        cache=cache,
        cache_version=cache_version,
        cache_serialize=cache_serialize,
        cache_ignore_inputs=cache_ignore_inputs,
        cache_ttl=cache_ttl,
        publish=publish,
        partitions=partitions,
        retries=retries,
        timeout=timeout,
        resources=resources,
        executor=executor,
        secrets=secrets,
    )
    return _decorator(fn, is_dynamic=True, options=options)
