"""`LocalExecutor`: runs task attempts on this machine (DESIGN section 7, ``local``).

Where an attempt runs:

- ``async def`` tasks run as asyncio tasks on the engine's event loop, in both modes, with no queue
  (``starts_on_submit``). A watchdog thread warns, on logger ``slipstream.executor.local``, when one
  of them blocks the loop (calls blocking code) for longer than ``loop_stall_threshold``.
- sync tasks and ``@dynamic`` expansions run in daemon worker threads (``mode="thread"``), or in
  spawn-started worker processes (``mode="process"``) that get the request as msgpack bytes (the
  task by import, or cloudpickled in ``TaskRef.pickled`` when a fresh process cannot import it).

Every attempt reports its start when a worker picks it up (``poll`` then says ``running``) and its
end. Start gate (``gates_start``): bodies that run in this process (threads, async tasks) wait for
``release(key)``, so the control loop has recorded the start before user code can take the process
down. A process worker needs no gate: its death fails only its attempt, as a retryable system
error, and a fresh worker replaces it.

Cancellation (the control loop enforces ``request.timeout`` by calling ``cancel``):

- async task: really cancelled; its ``finally`` blocks get a bounded grace (CANCEL_GRACE_SECONDS).
- process: the worker process is terminated (killed after the grace) and replaced.
- thread: **Python cannot stop a thread.** ``cancel`` forgets the attempt and discards its result;
  the thread runs the body to its end and then exits, and a fresh thread takes its place in the
  pool meanwhile. Worker threads are daemons, so a stuck body never keeps the process from exiting.
  Use ``mode="process"`` for sync tasks that must be stoppable.

Limits: process workers are daemonic (an engine that exits without ``close`` never waits for them),
so a task running in one cannot start ``multiprocessing`` children (``subprocess`` works). Resources
(cpu, mem, gpu) are not reserved: attempts get no GPU ids, and ``max_workers`` bounds concurrency.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

import msgspec

from engine.interfaces import BlobStore, Executor, TaskKey, TaskRequest, TaskStatus
from engine.models import ErrorInfo, TaskRef
from engine.runtime import (
    can_load,
    load_blobs,
    portable_blobs,
    portable_ref,
    read_secrets,
    resolve_request,
    run_attempt,
    run_attempt_async,
)

__all__ = ["LocalExecutor"]

Mode = Literal["thread", "process"]

# How long a cancelled async task may take to unwind, and a terminated process to exit before it
# is killed; a coroutine that swallows CancelledError must not hang the control loop.
CANCEL_GRACE_SECONDS = 5.0

log = logging.getLogger("slipstream.executor.local")


def _open_gate(attempt: _Attempt) -> None:
    if attempt.gate is not None:
        attempt.gate.set()
    if attempt.released is not None:
        attempt.released.set()


@dataclass(eq=False)
class _Attempt:
    """One submitted attempt. Fields are written on the event-loop thread, except where noted."""

    request: TaskRequest
    handle: str
    where: Literal["async", "thread", "process"]
    phase: Literal["queued", "running"] = "queued"
    worker: str = ""
    started_at: datetime | None = None
    final: TaskStatus | None = None  # set once the attempt reached a final phase
    # Read by worker threads: set before `gate` so that a woken thread sees it.
    cancelled: bool = False
    # The start gate, made only for the kind of body that waits on it: a map of 100k async
    # elements must not pay for 100k unused thread events.
    gate: threading.Event | None = None  # thread bodies wait on it
    released: asyncio.Event | None = None  # async bodies wait on it
    driver: asyncio.Task[None] | None = None  # async attempts
    process: _ProcessWorker | None = None  # process attempts, once dispatched
    # Thread attempts, guarded by LocalExecutor._lock: whether the body runs, and whether its
    # thread was given up on (cancelled mid-body: it retires when the body returns).
    in_body: bool = False
    abandoned: bool = False

    @property
    def key(self) -> TaskKey:
        return self.request.key


class LocalExecutor(Executor):
    """Runs attempts on the event loop (async tasks) and in local worker threads or processes.

    Args:
        mode: ``"thread"`` (default; shares memory; cannot stop a stuck sync task) or ``"process"``
            (spawned workers; inputs and outputs cross as literals; cancel terminates).
        max_workers: how many sync attempts run at once; by default ``min(32, cpus + 4)`` threads or
            one process per CPU.
        loop_stall_threshold: warn when an async task blocks the event loop for longer than this
            many seconds; ``None`` turns the watchdog off.

    Raises:
        ValueError: an argument is out of range.
    """

    name = "local"
    gates_start = True

    def __init__(
        self, mode: Mode = "thread", max_workers: int | None = None, *, loop_stall_threshold: float | None = 1.0
    ) -> None:
        if mode not in ("thread", "process"):
            raise ValueError(f"LocalExecutor(mode={mode!r}): mode must be 'thread' or 'process'")
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"LocalExecutor(max_workers={max_workers}): need at least one worker")
        if loop_stall_threshold is not None and loop_stall_threshold <= 0:
            raise ValueError(
                f"LocalExecutor(loop_stall_threshold={loop_stall_threshold}): give a positive number of seconds, "
                "or None to turn the watchdog off"
            )
        cpus = os.cpu_count() or 1
        self.mode: Mode = mode
        self.max_workers = max_workers or (min(32, cpus + 4) if mode == "thread" else cpus)
        self.loop_stall_threshold = loop_stall_threshold
        self._attempts: dict[TaskKey, _Attempt] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._blobs: BlobStore | None = None
        self._portable_blobs: bytes | None = None  # pickled once, sent with each process job
        self._handle = f"local:{os.getpid()}"  # attempts live in this process only, found by key
        self._report: Callable[[TaskKey], None] = lambda key: None
        self._lock = threading.Lock()
        self._threads: _ThreadPool | None = None
        self._workers: list[_ProcessWorker] = []
        self._retired: list[_ProcessWorker] = []  # stopped workers whose process may not have exited yet
        self._queued: collections.deque[_Attempt] = collections.deque()  # process attempts not dispatched
        self._spawned = 0
        self._watchdog: _LoopWatchdog | None = None
        self._closing = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, report: Callable[[TaskKey], None], *, blobs: BlobStore | None = None) -> None:
        """Remember the loop, ``report`` and the blob store; workers start on demand.

        Args:
            report: called on the event-loop thread when an attempt starts and when it ends (not
                when it was cancelled).
            blobs: where values referenced from inputs are read (before the body runs).
        """
        self._loop = asyncio.get_running_loop()
        self._report = report
        self._blobs = blobs
        self._portable_blobs = None
        self._closing = False
        if self.mode == "thread" and self._threads is None:
            self._threads = _ThreadPool(self.max_workers, self._run_in_thread)
        if self.loop_stall_threshold is not None and self._watchdog is None:
            self._watchdog = _LoopWatchdog(self._loop, self.loop_stall_threshold, self._describe_driver)

    async def close(self) -> None:
        """Cancel everything in flight, terminate process workers; never waits for stuck threads."""
        self._closing = True
        attempts = list(self._attempts.values())
        self._attempts.clear()
        drivers = [driver for attempt in attempts if (driver := self._stop(attempt)) is not None]
        if drivers:
            await asyncio.wait(drivers, timeout=CANCEL_GRACE_SECONDS)
        self._queued.clear()
        workers, retired = self._workers, self._retired
        self._workers, self._retired = [], []
        for worker in workers:
            worker.stop()
        workers += retired
        if workers:
            # so that no worker process outlives close(), nor is caught half-spawned at exit
            await _join_workers(workers, CANCEL_GRACE_SECONDS + 1)
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown()
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.stop()

    # --- Executor ------------------------------------------------------------------------------

    async def submit(self, request: TaskRequest) -> str:
        """Start the attempt, unless ``request.key`` is in flight or finished (and not forgotten).

        Args:
            request: the attempt to run.

        Returns:
            The attempt's handle, ``local:<pid>``: the process that holds it (attempts are found by key).

        Raises:
            RuntimeError: `start` was not awaited first, or the executor was closed.
        """
        loop = self._loop
        if loop is None or self._closing:
            raise RuntimeError("LocalExecutor.submit before start() or after close(): await executor.start(report)")
        key = request.key
        existing = self._attempts.get(key)
        if existing is not None:
            return existing.handle
        if self._blobs is not None:
            request = await resolve_request(request, self._blobs)
            if key in self._attempts:  # submitted again while its blobs were read
                return self._attempts[key].handle
        handle = self._handle
        if self.starts_on_submit(request):
            attempt = _Attempt(request, handle, "async", "running", f"{_process_name()}/asyncio", datetime.now(UTC))
            attempt.released = asyncio.Event()
            self._attempts[key] = attempt
            # unnamed: a name per attempt costs memory in a 100k-element map; the watchdog finds
            # the attempt by its driver when it has to name one
            attempt.driver = loop.create_task(self._drive_async(attempt))
        elif self.mode == "thread":
            attempt = _Attempt(request, handle, "thread", gate=threading.Event())
            self._attempts[key] = attempt
            assert self._threads is not None
            self._threads.put(attempt)
        else:
            request = msgspec.structs.replace(request, task=portable_ref(request.task))
            attempt = _Attempt(request, handle, "process")
            self._attempts[key] = attempt
            self._queued.append(attempt)
            self._dispatch()
        return handle

    async def poll(self, key: TaskKey, handle: str = "") -> TaskStatus:
        """The attempt's status: ``queued``, ``running``, then ``succeeded``/``failed``; ``lost`` if unknown.

        Args:
            key: the attempt.
            handle: ignored: attempts live in this process only, and are found by key.

        Returns:
            The attempt's current `TaskStatus`, with its handle.
        """
        return self.status(key)

    def status(self, key: TaskKey) -> TaskStatus:
        """What `poll` returns, without awaiting.

        Args:
            key: the attempt.

        Returns:
            The attempt's current `TaskStatus`; ``lost`` if unknown.
        """
        attempt = self._attempts.get(key)
        if attempt is None:
            return TaskStatus(phase="lost")
        if attempt.final is not None:
            return attempt.final
        return TaskStatus(
            phase=attempt.phase, worker=attempt.worker, started_at=attempt.started_at, handle=attempt.handle
        )

    async def cancel(self, key: TaskKey, handle: str = "") -> None:
        """Stop the attempt and forget it; it is never reported. Unknown keys are ignored.

        An async task is cancelled and awaited (up to CANCEL_GRACE_SECONDS); a process worker is
        terminated and replaced; a thread cannot be stopped: its result is discarded.

        Args:
            key: the attempt.
            handle: ignored (see `poll`).
        """
        attempt = self._attempts.pop(key, None)
        if attempt is None:
            return
        driver = self._stop(attempt)
        if driver is not None:
            await asyncio.wait([driver], timeout=CANCEL_GRACE_SECONDS)

    def forget(self, key: TaskKey) -> None:
        """Drop a finished attempt's result; an attempt still in flight is left alone.

        Args:
            key: the attempt.
        """
        attempt = self._attempts.get(key)
        if attempt is not None and attempt.final is not None:
            del self._attempts[key]

    def release(self, key: TaskKey) -> None:
        """Let the attempt's body run (its start is durable). Unknown keys are ignored.

        Call it on the event-loop thread, like every method but `start`'s ``report``.

        Args:
            key: the attempt.
        """
        attempt = self._attempts.get(key)
        if attempt is not None:
            _open_gate(attempt)

    def starts_on_submit(self, request: TaskRequest) -> bool:
        """True for ``async def`` tasks: they start on the loop at once, with no queue.

        Args:
            request: the attempt.

        Returns:
            Whether its body starts as soon as `submit` returns (after `release`).
        """
        return request.kind == "task" and request.task.is_async

    def can_run(self, task: TaskRef) -> bool:
        """Whether ``task`` can be loaded here: pickled, or its module importable and holding it.

        Args:
            task: the task reference.

        Returns:
            True if an attempt of it could start in this process.
        """
        return can_load(task)

    # --- attempts, on the event-loop thread ----------------------------------------------------

    def _stop(self, attempt: _Attempt) -> asyncio.Task[None] | None:
        """Stop an attempt already removed from ``_attempts``; return an async driver to await."""
        attempt.cancelled = True
        _open_gate(attempt)  # a thread waiting at the gate wakes, sees `cancelled`, skips the body
        if attempt.final is not None:
            return None  # finished: its worker may run another attempt by now
        if attempt.where == "async":
            if attempt.driver is not None and not attempt.driver.done():
                attempt.driver.cancel()
                return attempt.driver
        elif attempt.where == "thread":
            with self._lock:
                abandon = attempt.in_body and not attempt.abandoned
                attempt.abandoned = attempt.abandoned or abandon
            if abandon and self._threads is not None:
                self._threads.retire_one()
        elif attempt.process is not None:
            if attempt.process.attempt is attempt:  # else its end is posted and the worker moved on
                self._retire_worker(attempt.process)
        elif attempt in self._queued:
            self._queued.remove(attempt)
        return None

    def _started(self, attempt: _Attempt, worker: str, started_at: datetime | None) -> None:
        if self._attempts.get(attempt.key) is attempt and attempt.final is None:
            attempt.phase, attempt.worker, attempt.started_at = "running", worker, started_at
            self._report(attempt.key)

    def _finish(self, attempt: _Attempt, status: TaskStatus) -> None:
        if self._attempts.get(attempt.key) is attempt and attempt.final is None:
            attempt.final = msgspec.structs.replace(status, handle=attempt.handle)
            self._report(attempt.key)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """From any thread: run ``fn(*args)`` on the event-loop thread, where all state changes."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
                self._loop.call_soon_threadsafe(fn, *args)

    def _describe_driver(self, task: asyncio.Task[Any]) -> str | None:
        """From the watchdog's thread, while the loop is stalled (so nothing mutates the map):
        the attempt that ``task`` drives, described for a warning; None if it drives none."""
        try:
            attempts = list(self._attempts.values())
        except RuntimeError:  # changed under us after all: skip this report
            return None
        for attempt in attempts:
            if attempt.driver is task:
                key = attempt.key
                return (
                    f"async task {attempt.request.task.name!r} (execution {key.execution_id}, node {key.node_id}, "
                    f"attempt {key.attempt})"
                )
        return None

    async def _drive_async(self, attempt: _Attempt) -> None:
        watchdog = self._watchdog
        if watchdog is not None:
            watchdog.enter()
        try:
            # no start report: the loop recorded the start in the round that submitted it
            if attempt.released is not None:
                await attempt.released.wait()
            status = await run_attempt_async(
                attempt.request, worker=attempt.worker, started_at=attempt.started_at, blobs=self._blobs
            )
        except Exception as exc:  # a bug of ours: the attempt may run again
            status = _system_failure(attempt, f"local executor error: {type(exc).__name__}: {exc}")
        finally:
            if watchdog is not None:
                watchdog.exit()
        self._finish(attempt, status)

    # --- threads -------------------------------------------------------------------------------

    def _run_in_thread(self, attempt: _Attempt) -> bool:
        """In a worker thread: run one attempt; return True if the thread must retire."""
        if attempt.cancelled:
            return False
        worker, started_at = f"{_process_name()}/{threading.current_thread().name}", datetime.now(UTC)
        self._post(self._started, attempt, worker, started_at)
        assert attempt.gate is not None
        attempt.gate.wait()
        with self._lock:
            if attempt.cancelled:
                return False
            attempt.in_body = True
        try:
            status = run_attempt(attempt.request, worker=worker, started_at=started_at, blobs=self._blobs)
        except BaseException as exc:  # a bug of ours, or KeyboardInterrupt raised by the task
            status = _system_failure(attempt, f"local executor error: {type(exc).__name__}: {exc}")
        with self._lock:
            attempt.in_body = False
            retire = attempt.abandoned
        if not retire:
            self._post(self._finish, attempt, status)
        return retire

    # --- processes -----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Hand queued process attempts to idle workers, spawning workers up to ``max_workers``."""
        while self._queued and not self._closing:
            worker = next((w for w in self._workers if w.attempt is None), None)
            if worker is None:
                if len(self._workers) >= self.max_workers:
                    return
                worker = self._new_worker()
            attempt = self._queued.popleft()
            attempt.process = worker
            # Secrets come from the engine's environment, read now: a worker spawned earlier
            # would not see a variable set since.
            secrets = read_secrets(attempt.request.secrets)
            if self._portable_blobs is None and self._blobs is not None:
                self._portable_blobs = portable_blobs(self._blobs)
            job = _Job(attempt.request, secrets, self._portable_blobs)
            worker.run(attempt, msgspec.msgpack.encode(job))

    def _new_worker(self) -> _ProcessWorker:
        self._spawned += 1
        worker = _ProcessWorker(f"slipstream-local-process-{self._spawned}", self)
        self._workers.append(worker)
        worker.start()
        return worker

    def _retire_worker(self, worker: _ProcessWorker) -> None:
        """Terminate a worker (its attempt was cancelled) and start its replacement."""
        if worker in self._workers:
            self._workers.remove(worker)
            worker.stop()
            self._retired = [w for w in self._retired if w.alive] + [worker]
            if not self._closing:
                self._new_worker()
        self._dispatch()

    def _process_started(self, worker: _ProcessWorker, attempt: _Attempt, status: TaskStatus) -> None:
        self._started(attempt, status.worker, status.started_at)

    def _process_finished(self, worker: _ProcessWorker, attempt: _Attempt, status: TaskStatus) -> None:
        worker.attempt = None
        self._finish(attempt, status)
        self._dispatch()

    def _process_died(self, worker: _ProcessWorker, attempt: _Attempt | None, detail: str, replace: bool) -> None:
        if worker not in self._workers:
            return  # we stopped it: its attempt was cancelled, or we are closing
        self._workers.remove(worker)
        if attempt is not None:
            message = (
                f"local process worker {worker.name} died {detail}; a fresh worker replaces it (a crash, "
                "os._exit or the out-of-memory killer ends a worker; its stderr may say which)"
            )
            self._finish(attempt, _system_failure(attempt, message))
        # A worker that could not even start is not replaced at once (that could loop forever);
        # queued attempts still spawn workers on demand.
        if replace and not self._closing:
            self._new_worker()
        self._dispatch()


def _process_name() -> str:
    return f"{multiprocessing.current_process().name}[{os.getpid()}]"


def _system_failure(attempt: _Attempt, message: str) -> TaskStatus:
    error = ErrorInfo(kind="system", message=message, retryable=True, node_id=attempt.key.node_id)
    return TaskStatus(phase="failed", error=error, worker=attempt.worker, started_at=attempt.started_at)


# --- the thread pool -------------------------------------------------------------------------------


class _ThreadPool:
    """Daemon threads fed from one queue, started on demand up to ``size``.

    Not `concurrent.futures.ThreadPoolExecutor`: its threads are joined at interpreter exit, so one
    stuck task would keep the process alive. A thread given up on (`retire_one`) no longer counts
    against ``size``; it exits when its task returns.
    """

    def __init__(self, size: int, run: Callable[[_Attempt], bool]) -> None:
        self._size = size
        self._run = run  # returns True when the thread must retire
        self._queue: queue.SimpleQueue[_Attempt | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live = 0  # threads not given up on
        self._idle = 0  # live threads waiting for an item
        self._waiting = 0  # items put and not yet taken
        self._started = 0

    def put(self, attempt: _Attempt) -> None:
        with self._lock:
            self._waiting += 1
            self._grow()
        self._queue.put(attempt)

    def retire_one(self) -> None:
        """A thread is stuck in a cancelled body: stop counting it, and replace it if work waits."""
        with self._lock:
            self._live -= 1
            self._grow()

    def shutdown(self) -> None:
        """Let idle threads exit; threads stuck in a body are daemons and are left behind."""
        with self._lock:
            live, self._size = self._live, 0
        for _ in range(live):
            self._queue.put(None)

    def _grow(self) -> None:
        if self._waiting > self._idle and self._live < self._size:
            self._live += 1
            self._idle += 1
            self._started += 1
            threading.Thread(target=self._work, name=f"slipstream-local-{self._started}", daemon=True).start()

    def _work(self) -> None:
        while True:
            attempt = self._queue.get()
            if attempt is None:
                return
            with self._lock:
                self._idle -= 1
                self._waiting -= 1
            if self._run(attempt):
                return
            with self._lock:
                self._idle += 1


# --- process workers -------------------------------------------------------------------------------


class _Job(msgspec.Struct, frozen=True):
    """One attempt as sent to a process worker (msgpack): the request and its secrets' values."""

    request: TaskRequest
    secrets: dict[str, str]
    blobs: bytes | None = None  # the engine's blob store, pickled (`engine.runtime.portable_blobs`)


class _ProcessWorker:
    """One spawn-started worker process, and the daemon thread of ours that talks to it.

    The thread starts the process, sends it jobs through a pipe, and posts what comes back to the
    executor's loop: a ``running`` status when the child takes the job, then the final status, or
    the death of the process (EOF on the pipe).
    """

    def __init__(self, name: str, executor: LocalExecutor) -> None:
        self.name = name
        self.attempt: _Attempt | None = None  # written on the loop thread
        self._executor = executor
        self._inbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name=f"{name}-pipe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run(self, attempt: _Attempt, job: bytes) -> None:
        self.attempt = attempt
        self._inbox.put(job)

    def stop(self) -> None:
        """Terminate the process (killed after the grace if it ignores SIGTERM); never blocks."""
        with self._lock:
            self._stopping = True
            process = self._process
        self._inbox.put(None)
        if process is not None:
            _terminate(process)

    def _serve(self) -> None:
        context = multiprocessing.get_context("spawn")  # fork would copy the loop's threads and locks
        parent, child = context.Pipe()
        process = context.Process(target=_child_main, args=(child,), name=self.name, daemon=True)
        try:
            try:
                process.start()
            finally:
                child.close()  # else the parent holds the child's end open and never sees EOF
        except Exception as exc:
            parent.close()
            self._died(f"at start ({type(exc).__name__}: {exc})", replace=False)
            return
        with self._lock:
            self._process = process
            stopping = self._stopping
        try:
            if stopping:
                _terminate(process)
                return
            while (job := self._inbox.get()) is not None:
                attempt = self.attempt
                try:
                    parent.send_bytes(job)
                    running = msgspec.msgpack.decode(parent.recv_bytes(), type=TaskStatus)
                    self._executor._post(self._executor._process_started, self, attempt, running)
                    final = msgspec.msgpack.decode(parent.recv_bytes(), type=TaskStatus)
                    self._executor._post(self._executor._process_finished, self, attempt, final)
                except (EOFError, OSError, msgspec.DecodeError):
                    if not self._stopping:
                        process.join(CANCEL_GRACE_SECONDS)  # EOF comes as it exits: get its exit code
                        _terminate(process)
                    self._died(f"while running the attempt ({_exit_detail(process)})")
                    return
        finally:
            parent.close()

    @property
    def alive(self) -> bool:
        """Whether the pipe thread still runs (it ends once the process is gone)."""
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the pipe thread to end."""
        self._thread.join(timeout)

    def _died(self, detail: str, replace: bool = True) -> None:
        self._executor._post(self._executor._process_died, self, self.attempt, detail, replace)


async def _join_workers(workers: list[_ProcessWorker], timeout: float) -> None:
    """Wait, up to ``timeout`` seconds in all, for workers' pipe threads to end, without blocking the
    loop (and without the loop's default executor, which ``asyncio.run`` joins at its end)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def join() -> None:
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve, done, None)

    threading.Thread(target=join, name="slipstream-local-close", daemon=True).start()
    await done


def _resolve(future: asyncio.Future[None], value: None) -> None:
    if not future.done():
        future.set_result(value)


def _terminate(process: BaseProcess) -> None:
    if process.exitcode is not None:
        return
    process.terminate()

    def reap() -> None:
        process.join(CANCEL_GRACE_SECONDS)
        if process.exitcode is None:
            process.kill()
            process.join()

    threading.Thread(target=reap, name=f"{process.name}-reaper", daemon=True).start()


def _exit_detail(process: BaseProcess) -> str:
    code = process.exitcode
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _child_main(conn: Connection) -> None:
    """A worker process: run jobs from ``conn`` one at a time until the parent goes away."""
    # Ctrl-C reaches the whole process group; the engine decides what stops, and terminates us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = _process_name()
    while True:
        try:
            job = msgspec.msgpack.decode(conn.recv_bytes(), type=_Job)
        except EOFError:
            return
        started_at = datetime.now(UTC)
        conn.send_bytes(msgspec.msgpack.encode(TaskStatus(phase="running", worker=worker, started_at=started_at)))
        blobs = load_blobs(job.blobs)
        status = run_attempt(job.request, worker=worker, environ=job.secrets, started_at=started_at, blobs=blobs)
        conn.send_bytes(msgspec.msgpack.encode(status))


# --- the event-loop watchdog -----------------------------------------------------------------------


class _LoopWatchdog:
    """Warns, one line per stall, when the event loop stops answering while async tasks run.

    A thread posts a no-op to the loop every ``threshold / 2`` seconds, only while async attempts
    are in flight (none otherwise: no cost when nothing runs). When the loop has not run it after
    ``threshold`` seconds, the thread names the asyncio task holding the loop and warns when the
    loop answers again, or after ``STALL_REPORT_AFTER`` thresholds if it still does not.
    """

    STALL_REPORT_AFTER = 10

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float,
        describe: Callable[[asyncio.Task[Any]], str | None],
    ) -> None:
        self._loop = loop
        self._describe = describe
        self._threshold = threshold
        self._busy = 0  # async attempts in flight; changed on the loop thread only
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def enter(self) -> None:
        self._busy += 1
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="slipstream-loop-watchdog", daemon=True)
            self._thread.start()
        if self._busy == 1:  # the thread waits on _wake only while nothing was in flight
            self._wake.set()

    def exit(self) -> None:
        self._busy -= 1

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def _watch(self) -> None:
        while not self._stopped.is_set():
            self._wake.clear()  # before reading _busy: an enter() after this wakes the wait below
            if self._busy == 0:
                self._wake.wait()
                continue
            answered = threading.Event()
            posted = time.monotonic()
            try:
                self._loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # the loop is closed
                return
            if answered.wait(self._threshold):
                self._stopped.wait(self._threshold / 2)
                continue
            task = asyncio.current_task(self._loop)  # read from this thread: a dict lookup, safe
            culprit = self._describe(task) if task is not None else None
            if culprit is None:
                # the engine's own work (a long planning round), not a task's: no advice to give
                log.debug("the event loop did not answer for %.1f s", time.monotonic() - posted)
                answered.wait()
                continue
            answered.wait(self._threshold * (self.STALL_REPORT_AFTER - 1))
            still = "" if answered.is_set() else " and still blocks it"
            log.warning(
                "%s blocked the event loop for %.1f s%s (warning threshold %.1f s): it calls blocking code; "
                "await an async API instead, or make it a sync task",
                culprit,
                time.monotonic() - posted,
                still,
                self._threshold,
            )
            while not answered.wait(self._threshold):  # one line per stall
                if self._stopped.is_set():
                    return
