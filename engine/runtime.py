"""The worker-side runner every executor uses (DESIGN sections 2 and 7): one attempt, from a
`TaskRequest` to a final `TaskStatus`.

`run_attempt` (sync tasks and ``@dynamic`` expansions) and `run_attempt_async` (``async def`` tasks,
inside the caller's asyncio task) share one sequence: load the task, resolve its declared secrets,
decode its inputs, bind its `TaskContext` (what ``engine.current_context()`` returns), call it,
encode its outputs. They never raise for anything the task or its inputs do; each failure becomes
an `ErrorInfo`:

==========================================  ======  =========
what failed                                 kind    retryable
==========================================  ======  =========
the task cannot be loaded                   user    no
a declared secret is not set                user    no
an input literal does not decode            user    no
the task raised                             user    yes
a ``@dynamic`` body built an invalid graph  user    no
an output does not encode                   user    no
==========================================  ======  =========

Tracebacks start at the user's code: the runner's own frames (``engine``, ``asyncio``) are cut.
Executors add what only they know: where the attempt ran (``worker``, ``gpu_ids``), the handle,
and system failures (a worker that died, a timeout).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import inspect
import sys
import traceback
import weakref
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import msgspec

from engine._capture import NO_SECRETS, AttemptLog, Redactor, capture, live_log_path
from engine._compiler import CompileContext
from engine._context import TaskContext, bind_context, read_secrets
from engine._files import Materializer, holds_files, upload_files
from engine._literals import from_literal, to_literal
from engine._task import Task, _pickle_by_value
from engine.errors import (
    BlobStoreUnavailable,
    CompileError,
    ConfigError,
    MissingFile,
    SlipstreamError,
    TypeMismatch,
    UnknownInput,
)
from engine.events import ElementResult
from engine.interfaces import BlobStore, TaskKey, TaskRequest, TaskStatus
from engine.literals import BlobCache, BlobResolver, may_hold_references
from engine.models import ErrorInfo, TaskRef, WorkflowSpec

__all__ = [
    "can_load",
    "decode_inputs",
    "encode_outputs",
    "expand_dynamic",
    "load_blobs",
    "load_task",
    "portable_blobs",
    "portable_ref",
    "read_secrets",
    "resolve_request",
    "run_attempt",
    "run_attempt_async",
]

# What a task body may raise that fails its attempt. KeyboardInterrupt and CancelledError are not
# failures of the task: they stop whoever runs it. SystemExit is (``sys.exit()`` in a task).
_TASK_ERRORS = (Exception, SystemExit)

# Leading traceback frames from these modules are the runner's, not the user's.
_OWN_MODULES = ("engine", "asyncio")


# --- running an attempt ----------------------------------------------------------------------------


def run_attempt(
    request: TaskRequest,
    *,
    worker: str = "",
    gpu_ids: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    started_at: datetime | None = None,
    task: Task | None = None,
    blobs: BlobStore | None = None,
) -> TaskStatus:
    """Run one attempt of a sync task, or expand a ``@dynamic`` (``request.kind == "dynamic"``).

    An ``async def`` task given here runs to completion on a private event loop (``asyncio.run``);
    executors with a loop of their own use `run_attempt_async` instead.

    Args:
        request: the attempt.
        worker: where it runs (a process, thread or actor name), copied into the status.
        gpu_ids: GPUs reserved for the attempt, exposed as ``current_context().gpu_ids``.
        environ: where the task's declared secrets are looked up; this process's environment by
            default. An executor whose workers do not share the engine's environment passes the
            engine's values (see `read_secrets`).
        started_at: when the attempt started (a worker picked it up); now by default.
        task: ``request.task`` already loaded (a chunk loads it once for all its elements).
        blobs: the engine's blob store: ``File``/``Dir`` inputs are materialised from it into a
            temporary directory of the attempt (removed after it), and those returned are uploaded
            to it. Without one they pass as plain paths.

    Returns:
        A ``succeeded`` status with ``outputs`` (or ``dynamic_spec``), or a ``failed`` one with a
        ``user`` error (see the module docstring for which are retryable). For a chunk request
        (``request.elements``), a ``succeeded`` status with one `ElementResult` per element: the
        elements run one after the other here (async ones concurrently in `run_attempt_async`).

    Raises:
        RuntimeError: an ``async def`` task was given while an event loop runs in this thread.
    """
    if request.elements:
        started = started_at or datetime.now(UTC)
        loaded = _load_once(request, task)
        results = [
            _element_result(
                element,
                run_attempt(element, worker=worker, gpu_ids=gpu_ids, environ=environ, task=loaded, blobs=blobs),
            )
            for element in _elements(request)
        ]
        return _chunk_done(results, worker, gpu_ids, started)
    run = _Run(request, worker, gpu_ids, started_at)
    prepared = run.prepare(environ, task)
    if isinstance(prepared, TaskStatus):
        return prepared
    task, inputs, context = prepared
    if task.is_async and request.kind == "task" and _loop_running():
        raise RuntimeError(
            f"run_attempt got async task {task.name!r} inside a running event loop; "
            "await run_attempt_async(request) there instead"
        )
    files = _Files.of(blobs, task, request.kind)
    try:
        if files is not None:
            try:
                inputs = _run_sync(files.materialize(inputs))
            except Exception as exc:
                return run.files_failed("inputs", task, exc)
        with bind_context(context), capture(run.label, run.live, run.redact) as log:
            if request.kind == "dynamic":
                return _with_logs(run.expand(task, inputs), log)
            try:
                result = task.fn(**inputs)
                if inspect.iscoroutine(result):
                    # asyncio.run copies this context, so the task still sees its TaskContext
                    result = asyncio.run(result)
            except _TASK_ERRORS as exc:
                return _with_logs(run.raised(exc), log)
            if files is not None:
                try:
                    result = _run_sync(files.upload(result))
                except Exception as exc:
                    return _with_logs(run.files_failed("outputs", task, exc), log)
            return _with_logs(run.encode(task, result), log)
    finally:
        if files is not None:
            files.cleanup()


async def run_attempt_async(
    request: TaskRequest,
    *,
    worker: str = "",
    gpu_ids: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    started_at: datetime | None = None,
    task: Task | None = None,
    blobs: BlobStore | None = None,
) -> TaskStatus:
    """Run one attempt of an ``async def`` task in the current asyncio task.

    The context is bound in this asyncio task only, so concurrent attempts on one loop each see
    their own. Cancelling the calling task cancels the attempt: `asyncio.CancelledError`
    propagates. A ``CancelledError`` the task raises while nobody cancels it is a failure. A sync
    task (or a ``@dynamic`` expansion) given here runs on the loop's thread.

    Args:
        request: the attempt.
        worker: where it runs, copied into the status.
        gpu_ids: GPUs reserved for the attempt.
        environ: where declared secrets are looked up (see `run_attempt`).
        started_at: when the attempt started; now by default.
        task: ``request.task`` already loaded.
        blobs: where ``File``/``Dir`` values are read from and uploaded to (see `run_attempt`).

    Returns:
        The attempt's final status, as `run_attempt` returns it (a chunk's elements are gathered).

    Raises:
        asyncio.CancelledError: the calling task was cancelled.
    """
    if request.elements:
        started = started_at or datetime.now(UTC)
        elements = list(_elements(request))
        loaded = _load_once(request, task)
        statuses = await asyncio.gather(
            *(
                run_attempt_async(element, worker=worker, gpu_ids=gpu_ids, environ=environ, task=loaded, blobs=blobs)
                for element in elements
            )
        )
        results = [_element_result(element, status) for element, status in zip(elements, statuses, strict=True)]
        return _chunk_done(results, worker, gpu_ids, started)
    run = _Run(request, worker, gpu_ids, started_at)
    prepared = run.prepare(environ, task)
    if isinstance(prepared, TaskStatus):
        return prepared
    task, inputs, context = prepared
    files = _Files.of(blobs, task, request.kind)
    try:
        if files is not None:
            try:
                inputs = await files.materialize(inputs)
            except Exception as exc:
                return run.files_failed("inputs", task, exc)
        with bind_context(context), capture(run.label, run.live, run.redact) as log:
            if request.kind == "dynamic":
                return _with_logs(run.expand(task, inputs), log)
            try:
                result = task.fn(**inputs)
                if inspect.isawaitable(result):
                    result = await result
            except asyncio.CancelledError as exc:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                return _with_logs(run.raised(exc), log)
            except _TASK_ERRORS as exc:
                return _with_logs(run.raised(exc), log)
            if files is not None:
                try:
                    result = await files.upload(result)
                except Exception as exc:
                    return _with_logs(run.files_failed("outputs", task, exc), log)
            return _with_logs(run.encode(task, result), log)
    finally:
        if files is not None:
            files.cleanup()


class _Files:
    """The ``File``/``Dir`` values of one attempt, through the blob store (`engine._files`)."""

    def __init__(self, store: BlobStore, inputs: list[str], outputs: bool) -> None:
        self.store = store
        self.inputs = inputs  # the inputs whose type may hold one
        self.outputs = outputs
        self.materializer = Materializer(store)

    @classmethod
    def of(cls, store: BlobStore | None, task: Task, kind: str) -> _Files | None:
        """The transfer ``task`` needs, or None (no store, no file types, or a ``@dynamic``: its body
        passes files on to its children as references and never reads them)."""
        if store is None or kind != "task":
            return None
        inputs = [name for name, spec in task.interface.inputs.items() if holds_files(spec.type)]
        outputs = any(holds_files(tp) for _, tp in task.interface.outputs)
        return cls(store, inputs, outputs) if inputs or outputs else None

    async def materialize(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {
            name: await self.materializer.materialize(value) if name in self.inputs else value
            for name, value in inputs.items()
        }

    async def upload(self, result: Any) -> Any:
        return await upload_files(result, self.store) if self.outputs else result

    def cleanup(self) -> None:
        self.materializer.cleanup()


def _run_sync(coroutine: Any) -> Any:
    """Run a file transfer from sync code: on a private loop, in a helper thread if this one runs
    a loop already (a sync task given to the runner on a loop's thread)."""
    if not _loop_running():
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _with_logs(status: TaskStatus, log: AttemptLog) -> TaskStatus:
    text = log.text()
    return msgspec.structs.replace(status, logs=text) if text else status


# One cache per blob store in this process: a worker reads each manifest chunk of a map once, not
# once per chunk request (blobs are named by content, so nothing cached goes stale).
_BLOB_CACHES: weakref.WeakKeyDictionary[BlobStore, BlobCache] = weakref.WeakKeyDictionary()


def _cache_for(store: BlobStore) -> BlobCache:
    cache = _BLOB_CACHES.get(store)
    if cache is None:
        cache = _BLOB_CACHES[store] = BlobCache()
    return cache


async def resolve_request(request: TaskRequest, store: BlobStore) -> TaskRequest:
    """``request`` with every blob reference in its inputs replaced by the value it names.

    Executors call it before the body runs (values above the inline limit travel as references in
    the log); a chunk's elements share one read of each blob.

    Args:
        request: the attempt or chunk.
        store: the engine's blob store.

    Returns:
        The request itself when it holds no reference, else a copy with inline values.
    """
    literals = [*request.inputs.values(), *(item for values in request.mapped.values() for item in values)]
    if not any(may_hold_references(literal) for literal in literals):
        return request
    resolver = BlobResolver(store, _cache_for(store))
    await resolver.fetch(literals)
    inputs = {name: resolver.substitute(literal) for name, literal in request.inputs.items()}
    mapped = {name: [resolver.substitute(item) for item in values] for name, values in request.mapped.items()}
    return msgspec.structs.replace(request, inputs=inputs, mapped=mapped)


def portable_blobs(store: BlobStore | None) -> bytes | None:
    """``store`` pickled for a worker in another process (a process worker, a Ray actor), which
    reads the ``File``/``Dir`` inputs of its attempts from it and uploads those they return.

    Args:
        store: the engine's blob store, or None.

    Returns:
        The pickled store (pass it to `load_blobs` there), or None when there is none.

    Raises:
        ConfigError: the store cannot be pickled (a backend holding a live connection).
    """
    if store is None:
        return None
    import cloudpickle

    try:
        return cloudpickle.dumps(store)
    except Exception as exc:
        raise ConfigError(
            f"blob store {store} cannot be sent to worker processes ({_describe(exc)}): files and directories "
            "travel through it; give it picklable settings (a directory or URL) and open connections in start()"
        ) from exc


_LOADED_BLOBS: dict[bytes, BlobStore] = {}


def load_blobs(data: bytes | None) -> BlobStore | None:
    """The store `portable_blobs` pickled, loaded once per process (its caches outlive attempts)."""
    if data is None:
        return None
    store = _LOADED_BLOBS.get(data)
    if store is None:
        import cloudpickle

        store = _LOADED_BLOBS[data] = cloudpickle.loads(data)
    return store


def _elements(request: TaskRequest) -> Iterator[TaskRequest]:
    """The attempts of a chunk request, one per map element (node ``<map>/<index>``)."""
    array_id = request.key.node_id.rpartition("/")[0]
    for position, index in enumerate(request.elements):
        inputs = dict(request.inputs)
        for name, values in request.mapped.items():
            inputs[name] = values[position]
        yield TaskRequest(
            key=TaskKey(request.key.execution_id, f"{array_id}/{index}", request.element_attempts[position]),
            task=request.task,
            inputs=inputs,
            kind=request.kind,
            resources=request.resources,
            timeout=request.timeout,
            project=request.project,
            domain=request.domain,
            secrets=request.secrets,
            live_logs=request.live_logs,
        )


def _load_once(request: TaskRequest, task: Task | None) -> Task | None:
    """The chunk's task, loaded once (unpickling it per element would dominate small elements);
    None if it does not load, so that each element reports the load error itself."""
    if task is not None:
        return task
    try:
        return load_task(request.task)
    except Exception:
        return None


def _element_result(element: TaskRequest, status: TaskStatus) -> ElementResult:
    index = int(element.key.node_id.rpartition("/")[2])
    if status.phase == "succeeded":
        return ElementResult(index, element.key.attempt, status.outputs.get("o0"), logs=status.logs)
    return ElementResult(index, element.key.attempt, error=status.error, logs=status.logs)


def _chunk_done(results: list[ElementResult], worker: str, gpu_ids: Sequence[str], started: datetime) -> TaskStatus:
    """A chunk succeeded as a job once every element has a result, whatever the results are."""
    return TaskStatus(phase="succeeded", elements=results, worker=worker, gpu_ids=list(gpu_ids), started_at=started)


class _Run:
    """The steps both runners share; each failure step returns the attempt's final status."""

    def __init__(self, request: TaskRequest, worker: str, gpu_ids: Sequence[str], started_at: datetime | None) -> None:
        self.request = request
        self.worker = worker
        self.gpu_ids = list(gpu_ids)
        self.started_at = started_at or datetime.now(UTC)
        key = request.key
        self.label = f"{key.execution_id} {key.node_id}#{key.attempt}"
        self.live = live_log_path(request.live_logs, key.execution_id, key.node_id, key.attempt)
        self.redact = NO_SECRETS  # the task's secrets, once they are read

    def prepare(
        self, environ: Mapping[str, str] | None, task: Task | None = None
    ) -> tuple[Task, dict[str, Any], TaskContext] | TaskStatus:
        """Load the task, resolve its secrets and decode its inputs, or fail (not retryable)."""
        request, ref = self.request, self.request.task
        try:
            task = task or load_task(ref)
        except Exception as exc:
            return self.failed(
                f"task {ref.name!r} ({ref.module}:{ref.qualname}) could not be loaded: {_describe(exc)}; define "
                "the task at module level in an importable module, or run it where that module is importable",
                exc,
                retryable=False,
            )
        secrets = read_secrets(request.secrets, environ)
        self.redact = Redactor(secrets) if secrets else NO_SECRETS
        missing = [name for name in request.secrets if name not in secrets]
        if missing:
            return self.failed(_missing_secrets(ref.name, missing), None, retryable=False)
        try:
            inputs = decode_inputs(task, request.inputs)
        except Exception as exc:
            return self.failed(f"inputs of task {task.name!r} do not decode: {_describe(exc)}", exc, retryable=False)
        context = TaskContext(
            execution_id=request.key.execution_id,
            node_id=request.key.node_id,
            attempt=request.key.attempt,
            gpu_ids=list(self.gpu_ids),
            secrets=secrets,
            project=request.project,
            domain=request.domain,
        )
        return task, inputs, context

    def expand(self, task: Task, inputs: dict[str, Any]) -> TaskStatus:
        """Expand a dynamic body into its sub-spec (call with the context bound)."""
        try:
            spec = expand_dynamic(task, inputs)
        except CompileError as exc:  # the body builds an invalid graph: the same at every try
            return self.failed(_describe(exc), exc, retryable=False)
        except _TASK_ERRORS as exc:
            return self.raised(exc)
        return self.succeeded(dynamic_spec=msgspec.msgpack.encode(spec))

    def encode(self, task: Task, result: Any) -> TaskStatus:
        """The success status carrying ``result`` as literals, or a failure if it does not encode."""
        try:
            outputs = encode_outputs(task, result)
        except Exception as exc:
            return self.failed(f"outputs of task {task.name!r} do not encode: {_describe(exc)}", exc, retryable=False)
        return self.succeeded(outputs=outputs)

    def files_failed(self, which: str, task: Task, exc: BaseException) -> TaskStatus:
        """Moving the attempt's files through the blob store failed; only a store that could not be
        reached (or an unexpected error) is worth another try: a missing file or blob stays missing."""
        verb = "could not be read from" if which == "inputs" else "could not be uploaded to"
        retryable = isinstance(exc, BlobStoreUnavailable) or not isinstance(exc, MissingFile | SlipstreamError)
        message = f"{which} of task {task.name!r} {verb} the blob store: {_describe(exc)}"
        return self.failed(message, exc, retryable=retryable)

    def raised(self, exc: BaseException) -> TaskStatus:
        """The task's own code raised: a user error, worth another try. Running out of memory is
        the attempt's environment failing (the process's memory limit, or the machine's), as when
        the out-of-memory killer ends a worker: a system error, retried on the system budget."""
        if isinstance(exc, MemoryError):
            message = (
                f"the attempt ran out of memory ({_describe(exc)}): give the task more memory "
                "(or run it where a memory limit allows more), or make it use less"
            )
            return self.failed(message, exc, retryable=True, kind="system")
        return self.failed(_describe(exc), exc, retryable=True)

    def failed(
        self, message: str, exc: BaseException | None, *, retryable: bool, kind: Literal["user", "system"] = "user"
    ) -> TaskStatus:
        error = ErrorInfo(
            kind=kind,
            message=self.redact(message),
            traceback="" if exc is None else self.redact(_user_traceback(exc)),
            retryable=retryable,
            node_id=self.request.key.node_id,
        )
        return TaskStatus(
            phase="failed", error=error, worker=self.worker, gpu_ids=self.gpu_ids, started_at=self.started_at
        )

    def succeeded(self, outputs: dict[str, bytes] | None = None, dynamic_spec: bytes | None = None) -> TaskStatus:
        return TaskStatus(
            phase="succeeded",
            outputs=outputs or {},
            dynamic_spec=dynamic_spec,
            worker=self.worker,
            gpu_ids=self.gpu_ids,
            started_at=self.started_at,
        )


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _missing_secrets(task: str, missing: list[str]) -> str:
    names = ", ".join(missing)
    if len(missing) == 1:
        what, fix = f"secret {names} but it is", "the environment variable"
    else:
        what, fix = f"secrets {names} but they are", "the environment variables"
    return (
        f"task {task!r} declares {what} not set: set {fix} {names} where the engine runs "
        f"(e.g. `export {missing[0]}=...`), or remove them from the task's secrets=[...]"
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` from the first frame that is not the runner's own."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and _is_own(tb):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _is_own(tb: TracebackType) -> bool:
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return any(module == own or module.startswith(own + ".") for own in _OWN_MODULES)


# --- finding a task's code -------------------------------------------------------------------------


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
        obj = _walk(ref.module, ref.qualname)
    if not isinstance(obj, Task):
        raise ConfigError(f"{ref.module}.{ref.qualname} is a {type(obj).__name__}, not a @task; decorate it with @task")
    return obj


def _walk(module_name: str, qualname: str) -> Any:
    if "<locals>" in qualname:
        raise ConfigError(
            f"task {module_name}.{qualname} is defined inside a function and cannot be imported; define it at "
            "module level"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import module {module_name!r} of task {qualname!r} ({exc}); make the module importable "
            "where tasks run (install the package or put it on PYTHONPATH)"
        ) from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"task {qualname!r} not found in module {module_name!r}; was it renamed or removed since the "
                "workflow was compiled?"
            ) from None
    return obj


def can_load(ref: TaskRef) -> bool:
    """Whether `load_task` can find ``ref`` in this process (without importing anything new).

    Args:
        ref: the task reference.

    Returns:
        True if it is pickled, or its module is imported and holds it, or its module is importable.
    """
    if ref.pickled is not None:
        return True
    module = sys.modules.get(ref.module)
    if module is None:
        try:
            return importlib.util.find_spec(ref.module) is not None
        except (ImportError, ValueError):
            return False
    if getattr(getattr(module, "__spec__", None), "_initializing", False):
        # another thread (a worker running a task of it) is importing it right now: its names
        # are not all bound yet, but it is importable, which is all a missing module shows either
        return True
    target: Any = module
    for part in ref.qualname.split("."):  # a different __main__ would not have it
        target = getattr(target, part, None)
        if target is None:
            return False
    return True


def portable_ref(ref: TaskRef) -> TaskRef:
    """``ref``, made loadable by a fresh process that gets this process's ``sys.path``.

    A task whose module a fresh process could not import (``__main__``, a module built in memory
    such as a notebook cell) travels cloudpickled. A task that cannot be loaded here is returned
    unchanged: the worker reports why it cannot load it.

    Args:
        ref: the task reference.

    Returns:
        ``ref``, or a copy with ``pickled`` set.
    """
    if ref.pickled is not None or _importable_elsewhere(ref):
        return ref
    try:
        task = load_task(ref)
    except Exception:
        return ref
    return msgspec.structs.replace(ref, pickled=_pickle_by_value(task))


def _importable_elsewhere(ref: TaskRef) -> bool:
    if ref.module in ("__main__", "__mp_main__"):
        return False
    module = sys.modules.get(ref.module)
    if module is not None:
        # A module built in memory (exec, a notebook cell) has no spec or no file to import from.
        spec = getattr(module, "__spec__", None)
        return spec is not None and spec.origin is not None
    with contextlib.suppress(Exception):
        return importlib.util.find_spec(ref.module) is not None
    return False


# --- values ----------------------------------------------------------------------------------------


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
