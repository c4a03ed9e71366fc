"""The control loop: workers running reconcile rounds for executions (DESIGN section 6).

A round is: load the execution's state (cached; caught up from the log), ask executors about the
attempts that reported, run the pure planner, append its events with the expected version, and
only then carry out its actions. The order makes every round re-entrant: if the process dies after
the append, the next process folds the log, sees queued attempts nobody runs and submits them again
(idempotent per ``(execution, node, attempt)``); if it dies before, nothing happened.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import anyio

from engine.errors import ConcurrencyConflict, ConfigError, SlipstreamError, StoreUnavailable
from engine.events import Event
from engine.interfaces import EventStore, Executor, TaskKey, TaskStatus
from engine.models import ErrorInfo, SubworkflowNode
from engine.state import ExecutionState
from propeller._planner import Cancel, Observations, PlannerConfig, Submit, plan_round
from propeller._queue import QueueShutDown, WorkQueue

__all__ = ["Controller", "FaultHook"]

log = logging.getLogger("slipstream.propeller")

FaultHook = Callable[[str], None]
"""Called at named points of a round (``before_append``, ``after_append``, ``after_submit``); tests
use it to kill the process exactly there."""

_FINAL_PHASES = frozenset({"succeeded", "failed"})


def utc_now() -> datetime:
    return datetime.now(UTC)


class _GroupCommit:
    """Appends of concurrent rounds that arrive while a write is in flight go out in one transaction.

    A lone round is written at once (no added latency); under load, rounds of many executions share
    a commit. If a batch hits a conflict, its appends are retried one by one so that only the
    execution that lost the race sees ``ConcurrencyConflict``.
    """

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._pending: list[tuple[str, int, Sequence[Event], asyncio.Future[None]]] = []
        self._writing = False

    async def append(self, execution_id: str, expected_version: int, events: Sequence[Event]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((execution_id, expected_version, events, future))
        if not self._writing:
            self._writing = True
            batch: list[tuple[str, int, Sequence[Event], asyncio.Future[None]]] = []
            try:
                while self._pending:
                    batch, self._pending = self._pending, []
                    await self._write(batch)
            except BaseException as exc:
                # this round was cancelled while writing for others: nobody else will, so fail them
                for *_, waiting in batch + self._pending:
                    if not waiting.done() and waiting is not future:
                        waiting.set_exception(StoreUnavailable(f"append abandoned: {exc!r}"))
                self._pending = []
                raise
            finally:
                self._writing = False
        await future

    async def _write(self, batch: list[tuple[str, int, Sequence[Event], asyncio.Future[None]]]) -> None:
        if len(batch) == 1:
            execution_id, expected, events, future = batch[0]
            try:
                await self._store.append(execution_id, expected, events)
            except BaseException as exc:  # handed to the waiting round, which decides
                future.set_exception(exc)
            else:
                future.set_result(None)
            return
        try:
            await self._store.append_many([(eid, expected, events) for eid, expected, events, _ in batch])
        except ConcurrencyConflict:
            for item in batch:
                await self._write([item])
            return
        except BaseException as exc:
            for *_, future in batch:
                future.set_exception(exc)
            return
        for *_, future in batch:
            future.set_result(None)


class Controller:
    """Advances executions by running reconcile rounds on ``workers`` concurrent workers.

    Args:
        store: the event log.
        executors: executors by name (the planner's ``default_executor`` must be one of them).
        workers: concurrent reconcile workers.
        config: planner tunables.
        clock: returns the current UTC time; events are stamped with it.
        resync_interval: seconds between sweeps that re-enqueue every unfinished execution.
        revisit_interval: seconds between rounds of executions with attempts in flight, so that
            changes other processes append (an abort) are seen while tasks run.
        fault_hook: test-only; called at named points of a round.
    """

    def __init__(
        self,
        store: EventStore,
        executors: Mapping[str, Executor],
        *,
        workers: int = 4,
        config: PlannerConfig | None = None,
        clock: Callable[[], datetime] = utc_now,
        resync_interval: float = 30.0,
        revisit_interval: float = 2.0,
        fault_hook: FaultHook | None = None,
    ) -> None:
        self.store = store
        self.executors = dict(executors)
        self.workers = workers
        self.config = config or PlannerConfig()
        self.clock = clock
        self.resync_interval = resync_interval
        self.revisit_interval = revisit_interval
        self.watch_pause = 0.25
        self._fault = fault_hook or (lambda point: None)
        self.queue: WorkQueue[str] = WorkQueue(name="executions")
        self._appender = _GroupCommit(store)
        self._cache: dict[str, ExecutionState] = {}
        # attempts handed to an executor and not yet forgotten: key -> executor name
        self._in_flight: dict[str, dict[TaskKey, str]] = {}
        self._completed: dict[str, set[TaskKey]] = {}
        self._synthetic: dict[TaskKey, TaskStatus] = {}  # failures of submit() itself
        self._changed: dict[str, asyncio.Event] = {}
        self._finished: dict[str, asyncio.Event] = {}
        # cached executions another writer may have appended to: their next round reads the tail
        # of the log first. Every other round trusts the cache, because the append's expected
        # version check turns any write it missed into a ConcurrencyConflict and a fresh load.
        self._stale: set[str] = set()
        # executions whose task code this process lacks: left to other engines, and not re-read
        # at every wake-up of the store watcher only to be declined again
        self._declined: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    # -- wake-ups ------------------------------------------------------------------------------------

    def enqueue(self, execution_id: str) -> None:
        """Schedule a round for the execution (deduplicated)."""
        self.queue.add(execution_id)

    def refresh(self, execution_id: str) -> None:
        """Schedule a round that first reads what others appended (after an abort, say)."""
        self._stale.add(execution_id)
        self.queue.add(execution_id)

    def on_task_done(self, key: TaskKey) -> None:
        """Executor callback: an attempt started or ended. Safe to call from any thread."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            self._note_done(key)
        else:
            self._loop.call_soon_threadsafe(self._note_done, key)

    def _note_done(self, key: TaskKey) -> None:
        self._completed.setdefault(key.execution_id, set()).add(key)
        self.queue.add(key.execution_id)

    async def wait_changed(self, execution_id: str) -> None:
        """Return after the next round of this execution that appended events."""
        event = self._changed.setdefault(execution_id, asyncio.Event())
        await event.wait()

    async def wait_finished(self, execution_id: str) -> None:
        """Return once a round of this process recorded the execution's end."""
        event = self._finished.setdefault(execution_id, asyncio.Event())
        await event.wait()

    def _signal_changed(self, execution_id: str, *, finished: bool) -> None:
        event = self._changed.pop(execution_id, None)
        if event is not None:
            event.set()
        if finished:
            event = self._finished.pop(execution_id, None)
            if event is not None:
                event.set()

    # -- running -------------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run workers, the resync sweep and the store watcher until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self.resync()
        try:
            async with anyio.create_task_group() as group:
                for _ in range(self.workers):
                    group.start_soon(self._worker)
                group.start_soon(self._resync_periodically)
                group.start_soon(self._revisit_running)
                group.start_soon(self._watch_store)
                task_status.started()
        finally:
            self.queue.shutdown()

    async def resync(self) -> None:
        """Enqueue every unfinished execution in the store (start-up and periodic sweep)."""
        cursor = None
        while True:
            page = await self.store.list_executions(status=["created", "running"], limit=500, cursor=cursor)
            for summary in page.items:
                if summary.execution_id not in self._declined:
                    self.refresh(summary.execution_id)
            cursor = page.next_cursor
            if cursor is None:
                return

    async def _resync_periodically(self) -> None:
        while True:
            await anyio.sleep(self.resync_interval)
            try:
                await self.resync()
            except Exception:
                log.exception("resync failed; retrying at the next interval")

    async def _revisit_running(self) -> None:
        """Give every execution with attempts in flight a round now and then.

        Another process may have appended to it (an abort from the CLI): only a round reads that
        and cancels the attempts. A round with nothing new costs one read of the log's tail.
        """
        while True:
            await anyio.sleep(self.revisit_interval)
            for execution_id, in_flight in list(self._in_flight.items()):
                if in_flight:
                    self.refresh(execution_id)

    async def _watch_store(self) -> None:
        """Pick up executions created by other processes sharing the store.

        Our own appends wake this too; the pause after each look bounds the listing queries to a
        few per second however busy the loop is (launches in this process are enqueued directly).
        """
        while True:
            try:
                await self.store.wait_for_changes(timeout=self.resync_interval)
                page = await self.store.list_executions(status="created", limit=500)
            except Exception:
                log.exception("watching the store failed; retrying")
                await anyio.sleep(1.0)
                continue
            for summary in page.items:
                if summary.execution_id not in self._declined:
                    self.enqueue(summary.execution_id)
            await anyio.sleep(self.watch_pause)

    async def _worker(self) -> None:
        while True:
            try:
                execution_id = await self.queue.get()
            except QueueShutDown:
                return
            try:
                await self.reconcile(execution_id)
            except ConcurrencyConflict:
                self.queue.add_rate_limited(execution_id)
            except StoreUnavailable as exc:  # an outage, not a bug: no traceback, retried with back-off
                log.warning("round of execution %s postponed: %s", execution_id, exc)
                self.queue.add_rate_limited(execution_id)
            except Exception:
                log.exception("round of execution %s failed; backing off", execution_id)
                self.queue.add_rate_limited(execution_id)
            else:
                self.queue.forget(execution_id)
            finally:
                self.queue.done(execution_id)

    # -- a round -------------------------------------------------------------------------------------

    async def _load(self, execution_id: str) -> tuple[ExecutionState | None, bool]:
        state = self._cache.get(execution_id)
        if state is None:
            events = await self.store.read(execution_id)
            if not events:
                return None, False
            return ExecutionState.fold(events), True
        if execution_id in self._stale:
            self._stale.discard(execution_id)
            ExecutionState.fold(await self.store.read(execution_id, after=state.version), state)
        return state, False

    async def reconcile(self, execution_id: str) -> None:
        """One round for one execution. Raises ``ConcurrencyConflict`` if another writer won."""
        if not await self.store.claim(execution_id):
            # another process runs it; if we lost the lease while running attempts, stop ours
            await self._disown(execution_id)
            return
        state, fresh = await self._load(execution_id)
        if state is None or (fresh and not self._can_run(state)):
            if state is not None:
                self._declined.add(execution_id)
            self._cache.pop(execution_id, None)
            await self.store.release(execution_id)
            return
        in_flight = self._in_flight.setdefault(execution_id, {})
        reported = self._completed.pop(execution_id, set())
        version = state.version
        try:
            statuses = {key: self._poll(key, in_flight) for key in reported}
            observations = Observations(
                now=self.clock(), completions=statuses, in_flight=in_flight.keys(), resubmit=fresh
            )
            plan = plan_round(state, observations, self.config)
            if plan.events:
                self._fault("before_append")
                await self._appender.append(execution_id, version, plan.events)
                self._fault("after_append")
        except BaseException:
            # the state may hold events that are not durable: forget it, and keep the reports for
            # the retried round (executors keep results until they are forgotten)
            self._cache.pop(execution_id, None)
            self._completed.setdefault(execution_id, set()).update(reported)
            raise
        self._cache[execution_id] = state
        for key, status in statuses.items():
            if status.phase in _FINAL_PHASES:
                self._forget(key, in_flight)
        for action in plan.actions:
            if isinstance(action, Submit):
                await self._submit(action, in_flight)
                self._fault("after_submit")
            elif isinstance(action, Cancel):
                await self._cancel(action, in_flight)
        if plan.wake_at is not None:
            delay = (plan.wake_at - observations.now).total_seconds()
            self.queue.add_after(execution_id, max(delay, 0.0))
        if plan.events or state.is_terminal:  # terminal: maybe ended by another writer (an abort)
            self._signal_changed(execution_id, finished=state.is_terminal)
        if state.is_terminal and not in_flight:
            self._cache.pop(execution_id, None)
            self._in_flight.pop(execution_id, None)
            await self.store.release(execution_id)

    async def _disown(self, execution_id: str) -> None:
        self._cache.pop(execution_id, None)
        for key, name in self._in_flight.pop(execution_id, {}).items():
            executor = self.executors.get(name)
            if executor is not None:
                await executor.cancel(key)

    def _can_run(self, state: ExecutionState) -> bool:
        """Whether this process has the code of every task the execution has planned so far.

        An engine resumes what it finds in the store; one opened for another workflow file must not
        take over (and fail for good) executions whose task modules it cannot import.
        """
        if state.is_terminal:
            return True
        for scope in state.scopes.values():
            for spec in [scope.spec, *scope.spec.subworkflows.values()]:
                for node in spec.nodes:
                    if isinstance(node, SubworkflowNode):
                        continue
                    executor = self.executors.get(node.options.executor or self.config.default_executor)
                    if executor is not None and not executor.can_run(node.task):
                        log.info(
                            "leaving execution %s to another engine: task %s:%s cannot be loaded here",
                            state.execution_id, node.task.module, node.task.qualname,
                        )
                        return False
        return True

    def _poll(self, key: TaskKey, in_flight: dict[TaskKey, str]) -> TaskStatus:
        synthetic = self._synthetic.get(key)
        if synthetic is not None:
            return synthetic
        executor = self.executors.get(in_flight.get(key, ""))
        if executor is None:
            return TaskStatus(phase="lost")
        return executor.poll(key)

    def _forget(self, key: TaskKey, in_flight: dict[TaskKey, str]) -> None:
        name = in_flight.pop(key, None)
        if self._synthetic.pop(key, None) is None and name in self.executors:
            self.executors[name].forget(key)

    async def _submit(self, action: Submit, in_flight: dict[TaskKey, str]) -> None:
        key = action.request.key
        executor = self.executors.get(action.executor)
        in_flight[key] = action.executor
        try:
            if executor is None:
                raise ConfigError(
                    f"node {key.node_id!r} asks for executor {action.executor!r}, which is not configured; "
                    f"configured: {sorted(self.executors)}. Install the plugin or change the task's executor="
                )
            await executor.submit(action.request)
        except Exception as exc:
            # a submit that cannot even start is reported like a failed attempt, so the planner
            # applies the retry budgets instead of the loop spinning on it
            kind = "user" if isinstance(exc, SlipstreamError) else "system"
            error = ErrorInfo(kind=kind, message=f"{type(exc).__name__}: {exc}", retryable=kind == "system")
            self._synthetic[key] = TaskStatus(phase="failed", error=error)
            self._note_done(key)

    async def _cancel(self, action: Cancel, in_flight: dict[TaskKey, str]) -> None:
        in_flight.pop(action.key, None)
        self._synthetic.pop(action.key, None)
        executor = self.executors.get(action.executor)
        if executor is not None:
            await executor.cancel(action.key)
