"""`LocalExecutor`: runs task attempts in this process (DESIGN section 7, ``local``).

Async tasks run as asyncio tasks on the engine's event loop; sync tasks (and every ``@dynamic``
expansion) run in a thread pool (``mode="thread"``) or a spawn-started process pool
(``mode="process"``). Process workers receive the task reference and the input literals, and load the
task by import; a task whose module cannot be imported there (``__main__``, a notebook) travels
cloudpickled in ``TaskRef.pickled``.

Cancellation (``request.timeout`` is enforced by the control loop, which calls ``cancel``): an async
task's coroutine is really cancelled. A running thread cannot be killed in
Python, and a process worker is shared by many attempts: in both cases ``cancel`` forgets the attempt
and its result is discarded when it arrives; the worker stays busy until the function returns.
``close`` does not wait for such stuck workers (process workers are terminated).

Resources (cpu, mem, gpu) are not reserved by this executor: attempts get no GPU ids, and the pool
size bounds concurrency.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib.util
import multiprocessing
import os
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from engine._context import TaskContext, bind_context, read_secrets
from engine.errors import CompileError
from engine.interfaces import Executor, TaskKey, TaskRequest, TaskStatus
from engine.models import ErrorInfo, TaskRef

if TYPE_CHECKING:
    from engine._task import Task

__all__ = ["LocalExecutor"]

Mode = Literal["thread", "process"]

# How long `cancel`/`close` wait for a cancelled async task to unwind (its `finally` blocks) before
# giving up on it; a coroutine that swallows CancelledError must not hang the control loop.
CANCEL_GRACE_SECONDS = 5.0


class _Job(msgspec.Struct, frozen=True):
    """One attempt as sent to a worker; msgpack-encoded for process workers."""

    key: TaskKey
    task: TaskRef
    inputs: dict[str, bytes]
    kind: Literal["task", "dynamic"]
    context: TaskContext


@dataclass(eq=False)
class _Attempt:
    job: _Job
    is_async: bool
    task: Task | None  # loaded in this process; None when loading failed
    status: TaskStatus | None = None  # set once the attempt reached a final phase
    driver: asyncio.Task[None] | None = None
    # Written by the worker thread when it starts (thread mode); plain attribute writes are atomic.
    worker: str = ""
    started_at: datetime | None = None
    # thread mode: called by the worker thread when it picks the attempt up, so the loop records
    # the real start (an attempt's timeout counts from there, not from queueing)
    on_start: Callable[[], None] | None = None
    submitted_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class LocalExecutor(Executor):
    """Runs attempts on the event loop (async tasks) and in a local thread or process pool.

    Args:
        mode: ``"thread"`` (default; shares memory, cannot kill stuck tasks) or ``"process"``
            (spawned workers; inputs and outputs cross as literals).
        max_workers: pool size; Python's default for the pool kind when ``None``.
    """

    name = "local"

    def __init__(self, mode: Mode = "thread", max_workers: int | None = None) -> None:
        if mode not in ("thread", "process"):
            raise ValueError(f"LocalExecutor(mode={mode!r}): mode must be 'thread' or 'process'")
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"LocalExecutor(max_workers={max_workers}): need at least one worker")
        self.mode: Mode = mode
        self.max_workers = max_workers
        self._attempts: dict[TaskKey, _Attempt] = {}
        self._pool: concurrent.futures.Executor | None = None
        self._on_done: Callable[[TaskKey], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, on_done: Callable[[TaskKey], None]) -> None:
        """Create the worker pool and remember ``on_done``.

        Args:
            on_done: called on the event-loop thread when an attempt succeeded or failed (not when
                it was cancelled), and in thread mode also when a worker starts it.
        """
        self._loop = asyncio.get_running_loop()
        self._on_done = on_done
        if self._pool is None:
            self._pool = self._new_pool()

    async def close(self) -> None:
        """Cancel every attempt in flight and shut the pool down without waiting for stuck workers."""
        attempts = list(self._attempts.values())
        self._attempts.clear()
        await self._cancel_drivers([a for a in attempts if a.status is None])
        pool, self._pool = self._pool, None
        if pool is not None:
            _shutdown_pool(pool)

    # --- Executor ------------------------------------------------------------------------------

    async def submit(self, request: TaskRequest) -> None:
        """Start the attempt, unless ``request.key`` was already submitted and not forgotten.

        Args:
            request: the attempt to run.

        Raises:
            RuntimeError: if `start` was not awaited first.
        """
        if self._loop is None or self._pool is None:
            raise RuntimeError("LocalExecutor.submit before start(): await executor.start(on_done) first")
        if request.key in self._attempts:
            return
        context = TaskContext(
            execution_id=request.key.execution_id,
            node_id=request.key.node_id,
            attempt=request.key.attempt,
            gpu_ids=[],
            secrets=read_secrets(request.secrets),
            project=request.project,
            domain=request.domain,
        )
        job = _Job(request.key, request.task, request.inputs, request.kind, context)
        try:
            task = _load_task(request.task)
        except Exception as exc:
            attempt = _Attempt(job, is_async=False, task=None)
            attempt.status = _failed(job, "user", _not_loadable(request.task, exc), _format(exc), False)
            self._attempts[request.key] = attempt
            # Report from a later loop iteration: the caller may still be planning this execution.
            self._loop.call_soon(self._report, attempt)
            return
        if self.mode == "process" and request.task.pickled is None and not _importable_elsewhere(request.task):
            job = msgspec.structs.replace(job, task=_with_pickled(request.task, task))
        attempt = _Attempt(job, is_async=bool(task.is_async) and request.kind == "task", task=task)
        if self.mode == "thread" and not attempt.is_async:
            attempt.on_start = functools.partial(self._report_start, attempt)
        self._attempts[request.key] = attempt
        attempt.driver = self._loop.create_task(
            self._drive(attempt), name=f"local:{request.key.execution_id}/{request.key.node_id}"
        )

    def poll(self, key: TaskKey) -> TaskStatus:
        """The attempt's status: ``running`` in flight, then ``succeeded``/``failed``; ``lost`` if unknown.

        Args:
            key: the attempt.

        Returns:
            The attempt's current `TaskStatus`.
        """
        attempt = self._attempts.get(key)
        if attempt is None:
            return TaskStatus(phase="lost")
        if attempt.status is not None:
            return attempt.status
        return TaskStatus(phase="running", worker=attempt.worker, started_at=attempt.started_at)

    async def cancel(self, key: TaskKey) -> None:
        """Stop the attempt and forget it; its ``on_done`` is never called. Unknown keys are ignored.

        An async task is cancelled and given a moment to unwind; a thread or process attempt keeps
        its worker busy until it returns, and its result is discarded.

        Args:
            key: the attempt.
        """
        attempt = self._attempts.pop(key, None)
        if attempt is not None and attempt.status is None:
            await self._cancel_drivers([attempt])

    def forget(self, key: TaskKey) -> None:
        """Drop a finished attempt's result; an attempt still in flight is left alone.

        Args:
            key: the attempt.
        """
        attempt = self._attempts.get(key)
        if attempt is not None and attempt.status is not None:
            del self._attempts[key]

    def can_run(self, task: TaskRef) -> bool:
        """Whether ``task`` can be loaded here: pickled, or its module importable and holding it.

        Args:
            task: the task reference.

        Returns:
            True if an attempt of it could start in this process.
        """
        if task.pickled is not None:
            return True
        module = sys.modules.get(task.module)
        if module is None:
            try:
                return importlib.util.find_spec(task.module) is not None
            except (ImportError, ValueError):
                return False
        target: Any = module
        for part in task.qualname.split("."):  # a different __main__ would not have it
            target = getattr(target, part, None)
            if target is None:
                return False
        return True

    # --- internals -----------------------------------------------------------------------------

    def _new_pool(self) -> concurrent.futures.Executor:
        if self.mode == "thread":
            return concurrent.futures.ThreadPoolExecutor(self.max_workers, thread_name_prefix="slipstream-local")
        # spawn, not fork: forking a process that runs an event loop and threads copies their locks
        # in whatever state they are, and fork is unavailable on macOS/Windows anyway.
        return concurrent.futures.ProcessPoolExecutor(self.max_workers, mp_context=multiprocessing.get_context("spawn"))

    async def _drive(self, attempt: _Attempt) -> None:
        """Run one attempt to a final status, store it and report it (never for a cancelled attempt)."""
        try:
            status = await self._execute(attempt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours or of the pool: the attempt may run again elsewhere
            status = _failed(
                attempt.job, "system", f"local executor error: {type(exc).__name__}: {exc}", _format(exc), True
            )
        if self._attempts.get(attempt.job.key) is not attempt:
            return  # cancelled or closed meanwhile
        attempt.status = status
        self._report(attempt)

    async def _execute(self, attempt: _Attempt) -> TaskStatus:
        loop = asyncio.get_running_loop()
        job, task = attempt.job, attempt.task
        assert task is not None
        if attempt.is_async:
            return await _run_async(job, task)
        pool = self._pool
        if pool is None:
            raise RuntimeError("the executor was closed")
        if self.mode == "thread":
            return await loop.run_in_executor(pool, _run_in_thread, job, task, attempt)
        try:
            payload = await loop.run_in_executor(pool, _run_in_child, msgspec.msgpack.encode(job))
        except BrokenProcessPool as exc:
            # A worker died (killed, segfault, out of memory); every attempt on this pool fails the
            # same way. Replace the pool once, so that the retries have somewhere to run.
            if self._pool is pool:
                self._pool = self._new_pool()
                _shutdown_pool(pool)
            return _failed(job, "system", f"local process worker died: {exc}", _format(exc), True)
        return msgspec.msgpack.decode(payload, type=TaskStatus)

    def _report_start(self, attempt: _Attempt) -> None:
        """From a worker thread: tell the loop the attempt started (it polls ``running``)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._report_if_running, attempt)

    def _report_if_running(self, attempt: _Attempt) -> None:
        if attempt.status is None:
            self._report(attempt)

    def _report(self, attempt: _Attempt) -> None:
        if self._on_done is not None and self._attempts.get(attempt.job.key) is attempt:
            self._on_done(attempt.job.key)

    async def _cancel_drivers(self, attempts: list[_Attempt]) -> None:
        drivers = [a.driver for a in attempts if a.driver is not None and not a.driver.done()]
        for driver in drivers:
            driver.cancel()
        if drivers:
            # Pool-backed drivers finish at once (only their wait is cancelled); async tasks get a
            # bounded moment to run their `finally` blocks.
            await asyncio.wait(drivers, timeout=CANCEL_GRACE_SECONDS)


# --- running an attempt (also in worker threads and processes) ------------------------------------


def _load_task(ref: TaskRef) -> Task:
    from engine._runtime import load_task

    return load_task(ref)


def _worker_name() -> str:
    return f"{multiprocessing.current_process().name}[{os.getpid()}]/{threading.current_thread().name}"


def _run_in_thread(job: _Job, task: Task, attempt: _Attempt) -> TaskStatus:
    attempt.worker = _worker_name()
    attempt.started_at = datetime.now(UTC)
    if attempt.on_start is not None:
        attempt.on_start()
    return _run_sync(job, task, attempt.worker, attempt.started_at)


def _run_in_child(payload: bytes) -> bytes:
    """Process-pool entry point: bytes in, bytes out, so nothing but literals crosses the boundary."""
    job = msgspec.msgpack.decode(payload, type=_Job)
    worker, started_at = _worker_name(), datetime.now(UTC)
    try:
        task = _load_task(job.task)
    except Exception as exc:
        status = _failed(job, "user", _not_loadable(job.task, exc), _format(exc), False, worker, started_at)
    else:
        status = _run_sync(job, task, worker, started_at)
    return msgspec.msgpack.encode(status)


def _run_sync(job: _Job, task: Task, worker: str, started_at: datetime) -> TaskStatus:
    from engine import _runtime

    def failed(kind: Literal["user", "system"], message: str, tb: str, retryable: bool) -> TaskStatus:
        return _failed(job, kind, message, tb, retryable, worker, started_at)

    with bind_context(job.context):
        try:
            inputs = _runtime.decode_inputs(task, job.inputs)
        except Exception as exc:
            return failed("user", f"inputs of task {task.name!r} do not decode: {_describe(exc)}", _format(exc), False)
        if job.kind == "dynamic":
            try:
                spec = _runtime.expand_dynamic(task, inputs)
            except CompileError as exc:  # the dynamic body builds an invalid workflow: same every time
                return failed("user", _describe(exc), _format(exc, skip=1), False)
            except BaseException as exc:
                return failed("user", _describe(exc), _format(exc, skip=1), True)
            return TaskStatus(
                phase="succeeded", dynamic_spec=msgspec.msgpack.encode(spec), worker=worker, started_at=started_at
            )
        try:
            result = task.fn(**inputs)
        except BaseException as exc:
            return failed("user", _describe(exc), _format(exc, skip=1), True)
        try:
            outputs = _runtime.encode_outputs(task, result)
        except Exception as exc:
            return failed("user", f"outputs of task {task.name!r} do not encode: {_describe(exc)}", _format(exc), False)
    return TaskStatus(phase="succeeded", outputs=outputs, worker=worker, started_at=started_at)


async def _run_async(job: _Job, task: Task) -> TaskStatus:
    """Run an async task in the current asyncio task, whose context is private to it."""
    from engine import _runtime

    worker, started_at = f"{_worker_name()}/asyncio", datetime.now(UTC)

    def failed(message: str, tb: str, retryable: bool) -> TaskStatus:
        return _failed(job, "user", message, tb, retryable, worker, started_at)

    with bind_context(job.context):
        try:
            inputs = _runtime.decode_inputs(task, job.inputs)
        except Exception as exc:
            return failed(f"inputs of task {task.name!r} do not decode: {_describe(exc)}", _format(exc), False)
        try:
            result = await task.fn(**inputs)
        except (Exception, SystemExit) as exc:  # CancelledError propagates: the attempt is cancelled
            return failed(_describe(exc), _format(exc, skip=1), True)
        try:
            outputs = _runtime.encode_outputs(task, result)
        except Exception as exc:
            return failed(f"outputs of task {task.name!r} do not encode: {_describe(exc)}", _format(exc), False)
    return TaskStatus(phase="succeeded", outputs=outputs, worker=worker, started_at=started_at)


def _failed(
    job: _Job,
    kind: Literal["user", "system"],
    message: str,
    tb: str,
    retryable: bool,
    worker: str = "",
    started_at: datetime | None = None,
) -> TaskStatus:
    error = ErrorInfo(kind=kind, message=message, traceback=tb, retryable=retryable, node_id=job.key.node_id)
    return TaskStatus(phase="failed", error=error, worker=worker, started_at=started_at)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _format(exc: BaseException, skip: int = 0) -> str:
    """The traceback text of ``exc``, without our own ``skip`` outermost frames (the call into user code)."""
    tb = exc.__traceback__
    for _ in range(skip):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _not_loadable(ref: TaskRef, exc: BaseException) -> str:
    return (
        f"task {ref.name!r} ({ref.module}:{ref.qualname}) could not be loaded: {_describe(exc)}; define the "
        "task at module level in an importable module, or run it where that module is importable"
    )


def _importable_elsewhere(ref: TaskRef) -> bool:
    """Whether a spawned worker can import the task's module (it gets this process's ``sys.path``)."""
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


def _with_pickled(ref: TaskRef, task: Any) -> TaskRef:
    import cloudpickle

    return msgspec.structs.replace(ref, pickled=cloudpickle.dumps(task))


def _shutdown_pool(pool: concurrent.futures.Executor) -> None:
    pool.shutdown(wait=False, cancel_futures=True)
    if isinstance(pool, concurrent.futures.ProcessPoolExecutor):
        # Python < 3.14 has no public way to stop a worker stuck in a task; without this, a hung task
        # keeps its process (and the interpreter's exit) waiting forever.
        processes = getattr(pool, "_processes", None) or {}
        for process in list(processes.values()):
            with contextlib.suppress(Exception):
                process.terminate()
