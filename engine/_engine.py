"""`Engine`: the embeddable facade that wires a store, executors and the control loop (DESIGN 11)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from engine._details import ExecutionDetails, details_of
from engine.errors import (
    ConcurrencyConflict,
    ConfigError,
    ExecutionAborted,
    ExecutionNotFinished,
    ExecutionNotFound,
    TaskFailed,
)
from engine.events import AnyEvent, ExecutionCreated
from engine.events import ExecutionAborted as ExecutionAbortedEvent
from engine.interfaces import EventStore, ExecutionSummary, Executor
from engine.models import ErrorInfo, SubworkflowNode, WorkflowSpec
from engine.state import ExecutionState

if TYPE_CHECKING:
    from engine._workflow import Workflow
    from propeller import Controller

__all__ = ["Engine", "ExecutionHandle", "run_locally"]

_FAULT_ENV = "SLIPSTREAM_TEST_FAULT"  # test-only: "<point>:<n>" kills the process the n-th time there


def _backend(group: str, name: str) -> Any:
    """The backend class registered under ``name`` in the entry-point ``group``."""
    found = {ep.name: ep for ep in entry_points(group=group)}
    if name not in found:
        raise ConfigError(
            f"no backend named {name!r} in entry-point group {group!r}; installed: {sorted(found)}. "
            "Install the plugin package that provides it, or pick an installed one"
        )
    return found[name].load()


def _fault_hook_from_env() -> Callable[[str], None] | None:
    spec = os.environ.get(_FAULT_ENV)
    if not spec:
        return None
    point, _, count_text = spec.partition(":")
    remaining = [int(count_text or "1")]

    def hook(at: str) -> None:
        if at == point:
            remaining[0] -= 1
            if remaining[0] == 0:
                os.kill(os.getpid(), 9)

    return hook


class _Started:
    """The ``task_status`` protocol of anyio, resolving a future (the loop runs as a plain task)."""

    def __init__(self, future: asyncio.Future[None]) -> None:
        self._future = future

    def started(self, value: object = None) -> None:
        if not self._future.done():
            self._future.set_result(None)


async def _stop_task(runner: asyncio.Task[None]) -> None:
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner


class ExecutionHandle:
    """A launched execution: wait for it, then read its outputs."""

    def __init__(self, engine: Engine, execution_id: str, workflow: Workflow | None = None) -> None:
        self._engine = engine
        self.execution_id = execution_id
        self._workflow = workflow

    def __repr__(self) -> str:
        return f"ExecutionHandle({self.execution_id!r})"

    async def wait(self, timeout: float | None = None) -> ExecutionSummary:
        """Wait until the execution ends; return its summary.

        Raises:
            TimeoutError: it did not end within ``timeout`` seconds.
        """
        with anyio.fail_after(timeout):
            return await self._engine._wait_terminal(self.execution_id)

    async def outputs(self, timeout: float | None = None) -> Any:
        """Wait, then return the workflow's outputs as Python values.

        Raises:
            TaskFailed: the execution failed (carries the node id and the remote traceback).
            ExecutionAborted: the execution was aborted.
        """
        await self.wait(timeout)
        state = await self._engine._state(self.execution_id)
        if state.phase == "failed":
            error = state.error or ErrorInfo(kind="system", message="unknown failure")
            raise TaskFailed(self.execution_id, error.node_id, error.message, error.kind, error.traceback)
        if state.phase == "aborted":
            raise ExecutionAborted(self.execution_id, state.abort_reason)
        outputs = state.outputs or {}
        if self._workflow is not None:
            return self._workflow.decode_outputs(outputs)
        values = {name: msgspec.msgpack.decode(literal) for name, literal in outputs.items()}
        if not values:
            return None
        return values["o0"] if list(values) == ["o0"] else values


class Engine:
    """Runs workflows: an event store, executors and the control loop, as an async context manager.

    Build one with `Engine.embedded` (SQLite, local executor, zero set-up) or `Engine.connect`
    (Postgres). Leaving ``async with`` stops the loop cleanly; an engine opened on a store that
    holds unfinished executions resumes them. With ``run_loop=False`` it is a client: it launches,
    reads, aborts and recovers, and the executions run in the engines that run loops on the same
    store (``slipstream serve``).
    """

    def __init__(
        self,
        store: EventStore,
        executors: dict[str, Executor],
        *,
        workers: int = 4,
        retry_delay: float = 1.0,
        default_executor: str = "local",
        resync_interval: float = 30.0,
        revisit_interval: float = 2.0,
        run_loop: bool = True,
        id_factory: Callable[[], str] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.executors = executors
        self._workers = workers
        self._retry_delay = retry_delay
        self._default_executor = default_executor
        self._resync_interval = resync_interval
        self._revisit_interval = revisit_interval
        self._run_loop = run_loop
        self._id_factory = id_factory or (lambda: uuid.uuid4().hex[:20])
        self._clock = clock or (lambda: datetime.now(UTC))
        self._controller: Controller | None = None
        self._stack: AsyncExitStack | None = None
        self._workflows: dict[str, Workflow] = {}

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def embedded(
        cls,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        executor: str = "local",
        executor_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> Engine:
        """An engine on one machine: SQLite under ``state_dir``, the local executor.

        Args:
            state_dir: where the event log lives; default ``$SLIPSTREAM_STATE_DIR`` or ``~/.slipstream``.
            executor: executor backend name (entry point in ``slipstream.executors``).
            executor_options: keyword arguments for the executor (e.g. ``{"mode": "process"}``).
            **options: `Engine` options (``workers``, ``retry_delay``, ...).
        """
        directory = Path(state_dir or os.environ.get("SLIPSTREAM_STATE_DIR") or Path.home() / ".slipstream")
        store = _backend("slipstream.stores", "sqlite")(directory / "events.db")
        executors = {executor: _backend("slipstream.executors", executor)(**(executor_options or {}))}
        return cls(store, executors, default_executor=executor, **options)

    @classmethod
    def connect(
        cls,
        postgres: str | None = None,
        nats: str | None = None,
        executor: str = "local",
        ray_address: str | None = None,
        *,
        executor_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> Engine:
        """An engine on the production store: Postgres at ``postgres`` (or ``$SLIPSTREAM_POSTGRES_DSN``).

        ``nats`` and ``ray_address`` are accepted for the event-stream and Ray executor backends;
        ``executor`` names the executor backend (``local`` until the Ray plugin is installed).
        """
        dsn = postgres or os.environ.get("SLIPSTREAM_POSTGRES_DSN")
        if not dsn:
            raise ConfigError(
                "Engine.connect needs a Postgres DSN: pass postgres='postgresql://...' or set SLIPSTREAM_POSTGRES_DSN"
            )
        store = _backend("slipstream.stores", "postgres")(dsn)
        executor_kwargs = dict(executor_options or {})
        address = ray_address or os.environ.get("SLIPSTREAM_RAY_ADDRESS")
        if executor == "ray" and address:
            executor_kwargs.setdefault("address", address)
        executors = {executor: _backend("slipstream.executors", executor)(**executor_kwargs)}
        return cls(store, executors, default_executor=executor, **options)

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        from propeller import Controller, PlannerConfig

        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await self.store.start()
            stack.push_async_callback(self.store.close)
            if not self._run_loop:
                self._stack = stack
                return self
            controller = Controller(
                self.store,
                self.executors,
                workers=self._workers,
                config=PlannerConfig(default_executor=self._default_executor, retry_delay=self._retry_delay),
                clock=self._clock,
                resync_interval=self._resync_interval,
                revisit_interval=self._revisit_interval,
                fault_hook=_fault_hook_from_env(),
            )
            for executor in self.executors.values():
                await executor.start(controller.on_task_done)
                stack.push_async_callback(executor.close)
            # a plain task, not a task group: the caller may enter and exit the engine from
            # different tasks (pytest-asyncio fixtures, frameworks' lifespan hooks)
            started = asyncio.get_running_loop().create_future()
            runner = asyncio.create_task(controller.run(task_status=_Started(started)), name="slipstream-loop")
            stack.push_async_callback(_stop_task, runner)
            await asyncio.wait([started, runner], return_when=asyncio.FIRST_COMPLETED)
            if runner.done():
                runner.result()  # the loop failed to start: raise its error
        except BaseException:
            await stack.__aexit__(*sys.exc_info())
            raise
        self._controller = controller
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack, self._controller = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def controller(self) -> Controller:
        if self._controller is None:
            raise ConfigError("the engine is not running: use it inside `async with Engine.embedded() as eng:`")
        return self._controller

    # -- API -------------------------------------------------------------------------------------

    async def launch(
        self,
        workflow: Workflow,
        *,
        project: str = "default",
        domain: str = "development",
        execution_id: str | None = None,
        **inputs: Any,
    ) -> ExecutionHandle:
        """Validate ``inputs`` and start an execution of ``workflow``.

        Raises:
            TypeMismatch, UnknownInput, CompileError: bad inputs; nothing is written.
            ConfigError: a task names an executor this engine does not have.
        """
        spec: WorkflowSpec | None = getattr(workflow, "spec", None)
        if spec is None or not hasattr(workflow, "encode_inputs"):
            raise ConfigError(f"launch() needs a @workflow, got {workflow!r}: decorate the function with @workflow")
        literals = workflow.encode_inputs(inputs)
        self._check_executors(spec)
        execution_id = execution_id or self._id_factory()
        created = ExecutionCreated(
            execution_id=execution_id,
            version=1,
            at=self._clock(),
            project=project,
            domain=domain,
            workflow=spec.name,
            workflow_version=spec.version,
            spec=spec,
            inputs=literals,
        )
        await self.store.append(execution_id, 0, [created])
        self._workflows[spec.name] = workflow
        if self._controller is not None:  # a client engine leaves it to the serving engines
            self._controller.enqueue(execution_id)
        return ExecutionHandle(self, execution_id, workflow)

    def _check_executors(self, spec: WorkflowSpec) -> None:
        names = set()
        for nested in [spec, *spec.subworkflows.values()]:
            for node in nested.nodes:
                if not isinstance(node, SubworkflowNode) and node.options.executor:
                    names.add(node.options.executor)
        missing = sorted(names - set(self.executors))
        if missing:
            raise ConfigError(
                f"workflow {spec.name!r} uses executor(s) {missing} but this engine has {sorted(self.executors)}: "
                "install and configure them, or drop executor= from those tasks"
            )

    def handle(self, execution_id: str) -> ExecutionHandle:
        """A handle on an existing execution (outputs are decoded untyped unless launched here)."""
        return ExecutionHandle(self, execution_id, None)

    async def get(self, execution_id: str) -> ExecutionDetails:
        """The execution's status and per-node progress. Raises ``ExecutionNotFound``."""
        return details_of(await self._state(execution_id))

    async def list_executions(
        self,
        *,
        project: str | None = None,
        domain: str | None = None,
        status: str | Sequence[str] | None = None,
        workflow: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> list[ExecutionSummary]:
        """Executions newest first, filtered."""
        page = await self.store.list_executions(
            project=project,
            domain=domain,
            status=status,
            workflow=workflow,
            limit=limit,
            cursor=cursor,  # type: ignore[arg-type]
        )
        return list(page.items)

    async def history(self, execution_id: str) -> list[AnyEvent]:
        """The execution's events in version order. Raises ``ExecutionNotFound``."""
        events = await self.store.read(execution_id)
        if not events:
            raise ExecutionNotFound(execution_id)
        return events

    async def abort(self, execution_id: str, reason: str = "aborted by user") -> None:
        """Abort the execution: record ``ExecutionAborted``; the loop cancels running attempts.

        Aborting a finished execution does nothing.
        """
        while True:
            state = await self._state(execution_id)
            if state.is_terminal:
                return
            event = ExecutionAbortedEvent(
                execution_id=execution_id, version=state.version + 1, at=self._clock(), reason=reason
            )
            try:
                await self.store.append(execution_id, state.version, [event])
            except ConcurrencyConflict:
                continue  # the loop appended meanwhile; look again
            break
        if self._controller is not None:
            self._controller.refresh(execution_id)  # its cached state has not seen the abort

    async def recover(self, execution_id: str) -> ExecutionHandle:
        """Start a new execution that reuses every node ``execution_id`` finished and runs the rest.

        Raises:
            ExecutionNotFound: no such execution.
            ExecutionNotFinished: it is still running (recovering it would run its nodes twice).
        """
        from propeller import recovery_events

        source = await self._state(execution_id)
        if not source.is_terminal:
            raise ExecutionNotFinished(execution_id, "recover", source.phase)
        new_id = self._id_factory()
        await self.store.append(new_id, 0, recovery_events(source, new_id, self._clock()))
        if self._controller is not None:  # else the next engine to open this store runs it
            self._controller.enqueue(new_id)
        return ExecutionHandle(self, new_id, self._workflows.get(source.spec.name))

    async def _state(self, execution_id: str) -> ExecutionState:
        events = await self.store.read(execution_id)
        if not events:
            raise ExecutionNotFound(execution_id)
        return ExecutionState.fold(events)

    async def _wait_terminal(self, execution_id: str) -> ExecutionSummary:
        while True:
            summary = await self.store.get_summary(execution_id)
            if summary is None:
                raise ExecutionNotFound(execution_id)
            if summary.status in ("succeeded", "failed", "aborted"):
                return summary
            # woken when this process records the end; the timeout covers executions that another
            # process runs (or aborts)
            with anyio.move_on_after(0.5):
                if self._controller is not None:
                    await self._controller.wait_finished(execution_id)
                else:
                    await self.store.wait_for_changes(timeout=0.5)

    async def watch(self, execution_id: str, interval: float = 0.2) -> AsyncIterator[ExecutionDetails]:
        """Yield the execution's details each time it changes, until it ends.

        The log is folded once, then only its new tail at each change.
        """
        state = await self._state(execution_id)
        while True:
            ExecutionState.fold(await self.store.read(execution_id, after=state.version), state)
            details = details_of(state)
            yield details
            if details.status in ("succeeded", "failed", "aborted"):
                return
            with anyio.move_on_after(interval):
                if self._controller is not None:
                    await self._controller.wait_changed(execution_id)
                else:
                    await self.store.wait_for_changes(timeout=interval)


def run_locally(workflow: Workflow, inputs: dict[str, Any]) -> Any:
    """Run ``workflow`` to completion in an ephemeral embedded engine and return its outputs.

    This is what calling a ``@workflow`` outside a workflow does, like flytekit's local execution.
    """

    async def main() -> Any:
        with tempfile.TemporaryDirectory(prefix="slipstream-") as state_dir:
            async with Engine.embedded(state_dir=state_dir, retry_delay=0.1) as engine:
                handle = await engine.launch(workflow, **inputs)
                return await handle.outputs()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    # called from inside a running loop (a notebook, an async task): run on a thread of its own
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="slipstream-local-run") as pool:
        return pool.submit(asyncio.run, main()).result()
