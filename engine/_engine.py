"""`Engine`: the embeddable facade that wires a store, executors and the control loop (DESIGN 11)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from engine._details import ExecutionDetails, details_of
from engine._files import Materializer, upload_inputs
from engine._literals import from_literal
from engine._logs import AttemptLogs, read_logs
from engine._outage import ride_out
from engine._outputs import node_literals, plain_outputs, typed_node_outputs, typed_workflow_outputs
from engine._scoped_catalog import ScopedCatalog
from engine._validation import (
    DOMAINS,
    MAX_INPUT_BYTES,
    MAX_INPUT_DEPTH,
    check_execution_id,
    check_input_depth,
    check_input_sizes,
    check_scope,
    check_spec,
)
from engine._wiring import backend, blob_store, build_executors, event_stream_services, index_executors
from engine.errors import (
    ArtifactNotFound,
    ConcurrencyConflict,
    ConfigError,
    ExecutionAborted,
    ExecutionNotFinished,
    ExecutionNotFound,
    InvalidScope,
    TaskFailed,
    TypeMismatch,
)
from engine.events import AnyEvent, ExecutionCreated
from engine.events import ExecutionAborted as ExecutionAbortedEvent
from engine.interfaces import (
    TERMINAL_STATUSES,
    BlobStore,
    Catalog,
    EventStore,
    ExecutionStatus,
    ExecutionSummary,
    Executor,
    Service,
    ServiceContext,
    ServiceHealth,
)
from engine.literals import (
    INLINE_LIMIT,
    BlobResolver,
    may_hold_references,
    offload_outputs,
    offload_spec,
    store_blobs,
)
from engine.models import ErrorInfo, WorkflowSpec
from engine.state import ExecutionState

if TYPE_CHECKING:
    from engine._artifacts import ArtifactQuery
    from engine._subscribe import Subscription
    from engine._workflow import Workflow
    from propeller import Controller

__all__ = ["Engine", "ExecutionHandle", "run_locally"]

log = logging.getLogger("slipstream.engine")


class _Started:
    """The ``task_status`` protocol of anyio, resolving a future (the loop runs as a plain task)."""

    def __init__(self, future: asyncio.Future[None]) -> None:
        self._future = future

    def started(self, value: object = None) -> None:
        if not self._future.done():
            self._future.set_result(None)


def _ignore(execution_id: str) -> None:
    return None


async def _run_service(service: Service) -> None:
    try:
        await service.run()
    except Exception:
        # a service that gives up must not take the engine down; its health() says what is wrong
        log.exception("service %s stopped with an error", service.name or type(service).__name__)


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

        An outage of the store (a Postgres restart) is waited out, for up to a minute at a time.

        Raises:
            TimeoutError: it did not end within ``timeout`` seconds.
            StoreUnavailable: the store stayed unreachable for a minute.
        """
        with anyio.fail_after(timeout):
            return await self._engine._wait_terminal(self.execution_id)

    async def outputs(self, timeout: float | None = None) -> Any:
        """Wait, then return the workflow's outputs as Python values (riding out a store outage as
        `wait` does).

        Raises:
            TaskFailed: the execution failed (carries the node id and the remote traceback).
            ExecutionAborted: the execution was aborted.
            StoreUnavailable: the store stayed unreachable for a minute.
        """
        summary = await self.wait(timeout)
        state = self._engine._ended_state(summary) or await ride_out(lambda: self._engine._state(self.execution_id))
        _raise_unless_succeeded(state)
        outputs = await self._engine._resolved(state.outputs or {})
        if self._workflow is not None:
            return await _downloaded(self._workflow.decode_outputs(outputs), self._engine.blobs)
        assert state.created is not None
        return await _downloaded(typed_workflow_outputs(state.created, outputs), self._engine.blobs)


async def _downloaded(value: Any, blobs: BlobStore | None) -> Any:
    """``value`` with each ``File``/``Dir`` in it written to a local temporary directory of its own
    (kept: it is the caller's), so that its path opens as where the task wrote it did."""
    if blobs is None:
        return value
    return await Materializer(blobs).materialize(value)


def _raise_unless_succeeded(state: ExecutionState) -> None:
    if state.phase == "failed":
        error = state.error or ErrorInfo(kind="system", message="unknown failure")
        raise TaskFailed(state.execution_id, error.node_id, error.message, error.kind, error.traceback)
    if state.phase == "aborted":
        raise ExecutionAborted(state.execution_id, state.abort_reason)


def _code_ref(workflow: Workflow) -> str | None:
    """Where the workflow's function lives, for readers in other processes; None when nothing
    else could import it (a script run as ``__main__``, a function defined in a function)."""
    fn = getattr(workflow, "fn", None)
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module in ("__main__", "__mp_main__") or "<locals>" in qualname:
        return None
    return f"{module}:{qualname}"


def _defaults(options: dict[str, Any], state_dir: Path) -> dict[str, Any]:
    """``options`` completed from the environment and the state directory: ``domains`` from
    ``$SLIPSTREAM_DOMAINS`` (comma-separated), the scope from ``$SLIPSTREAM_PROJECT`` and
    ``$SLIPSTREAM_DOMAIN``, live logs under ``<state_dir>/logs``."""
    options = {"live_logs": state_dir / "logs", **options}
    for name, variable in (("project", "SLIPSTREAM_PROJECT"), ("domain", "SLIPSTREAM_DOMAIN")):
        if name not in options and os.environ.get(variable):
            options[name] = os.environ[variable]
    listed = os.environ.get("SLIPSTREAM_DOMAINS", "")
    if "domains" not in options and listed.strip():
        options["domains"] = [d.strip() for d in listed.split(",") if d.strip()]
    return options


class ExecutionList(list[ExecutionSummary]):
    """A page of `Engine.list_executions`: a list of summaries, and where the next page starts."""

    def __init__(self, items: Sequence[ExecutionSummary] = (), next_cursor: str | None = None) -> None:
        super().__init__(items)
        self.next_cursor = next_cursor


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
        executors: Mapping[str, Executor] | Sequence[Executor],
        *,
        services: Sequence[Service] = (),
        blobs: BlobStore | None = None,
        catalog: Catalog | None = None,
        reservation_ttl: float = 30.0,
        inline_limit: int = INLINE_LIMIT,
        workers: int = 4,
        retry_delay: float = 1.0,
        default_executor: str | None = None,
        resync_interval: float = 30.0,
        revisit_interval: float = 2.0,
        run_loop: bool = True,
        resume: bool = True,
        nats: str | None = None,
        domains: Sequence[str] = DOMAINS,
        project: str | None = None,
        domain: str | None = None,
        max_input_bytes: int = MAX_INPUT_BYTES,
        max_input_depth: int = MAX_INPUT_DEPTH,
        live_logs: str | os.PathLike[str] | None = None,
        id_factory: Callable[[], str] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Wire an engine from ready backends (`embedded` and `connect` build them by name).

        Args:
            store: the event log.
            executors: executors by name, or a list (each keyed by its ``name``); a task's
                ``executor=`` picks one, the others run on ``default_executor``.
            services: long-running components started and stopped with the engine (a relay, a
                poller), in order.
            blobs: where values above ``inline_limit`` bytes are kept (events hold a reference);
                without one every value stays inline in the log.
            catalog: where ``cache=True`` tasks keep and find their outputs (started and closed
                with the engine); without one a cached task runs every time. A scoped engine's
                ``catalog`` attribute is a `ScopedCatalog` view of it: other projects' artifacts
                are not found there.
            reservation_ttl: seconds a ``cache_serialize`` reservation lasts unless renewed (a
                crashed engine's reservations are taken over after it).
            inline_limit: the largest literal written into an event, in bytes (64 KiB).
            default_executor: the executor of tasks without ``executor=``; ``local`` if there is
                one, else the first.
            workers, retry_delay, resync_interval, revisit_interval: control-loop tunables.
            run_loop: False for a client engine, which runs no executions itself.
            resume: take up the store's unfinished executions, and those other processes create;
                False runs only what this engine launches or recovers (`slipstream run` does so,
                leaving the rest to `slipstream serve`).
            nats: the NATS JetStream URL the relay publishes committed events to; `subscribe` then
                reads from JetStream instead of the event store (`connect` sets it from ``nats=``).
            domains: the domains executions may be launched into (``$SLIPSTREAM_DOMAINS``,
                comma-separated, for `embedded` and `connect`).
            project, domain: scope the engine (``$SLIPSTREAM_PROJECT``, ``$SLIPSTREAM_DOMAIN`` for
                `embedded` and `connect`): it launches there and cannot see, abort, recover, read
                outputs or logs of, or subscribe to other executions (they are not found). None:
                an administrator's engine, which sees every project.
            max_input_bytes, max_input_depth: the largest encoded input `launch` accepts (128 MiB)
                and the deepest nesting of lists, dicts, tuples and sets in one (100 levels).
            live_logs: a directory where running attempts mirror their output, so that
                `logs(follow=True)` in other processes on this machine sees it as it is written
                (`embedded` and `connect` use ``<state_dir>/logs``); None: only this process does.
            id_factory, clock: execution ids and event timestamps, injectable for tests.

        Raises:
            ConfigError: no executors, or a default executor that is not among them.
        """
        self.store = store
        self.executors = index_executors(executors)
        if not self.executors:
            raise ConfigError("an engine needs at least one executor: pass executors=['local'] or an Executor")
        default = default_executor or ("local" if "local" in self.executors else next(iter(self.executors)))
        if default not in self.executors:
            raise ConfigError(
                f"default_executor={default!r} is not one of this engine's executors {sorted(self.executors)}"
            )
        self.services = list(services)
        self.blobs = blobs
        self.catalog = catalog
        self._reservation_ttl = reservation_ttl
        self._loop_services: list[Service] = []
        self._inline_limit = inline_limit
        self._workers = workers
        self._retry_delay = retry_delay
        self._default_executor = default
        self._resync_interval = resync_interval
        self._revisit_interval = revisit_interval
        self._run_loop = run_loop
        self._resume = resume
        self.nats_url = nats
        self.domains = tuple(domains)
        if project is not None:
            check_scope(project, domain or self.domains[0], self.domains)
        if domain is not None and domain not in self.domains:
            check_scope(project or "default", domain, self.domains)
        self.project, self.domain = project, domain
        self._catalog = catalog  # the catalog itself: started, closed and used by the loop and services
        if catalog is not None and (project is not None or domain is not None):
            self.catalog = ScopedCatalog(catalog, project, domain)  # what the engine's users see of it
        self._max_input_bytes = max_input_bytes
        self._max_input_depth = max_input_depth
        self.live_logs = Path(live_logs) if live_logs is not None else None
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
        executors: Sequence[str | Executor] | None = None,
        executor_options: dict[str, Any] | None = None,
        services: Sequence[Service] = (),
        blobs: str | os.PathLike[str] | None = None,
        store: str = "sqlite",
        **options: Any,
    ) -> Engine:
        """An engine on one machine: SQLite under ``state_dir``, the local executor.

        Args:
            state_dir: where the event log lives; default ``$SLIPSTREAM_STATE_DIR`` or ``~/.slipstream``.
            executor: the default executor's backend name (entry point in ``slipstream.executors``).
            executors: every executor of the engine, as backend names or instances (default: just
                ``executor``); tasks pick one with ``executor=``.
            executor_options: keyword arguments for the executors built by name (e.g.
                ``{"mode": "process"}``).
            services: `Service` instances to run with the engine.
            blobs: where large values live: a directory or URL (``s3://bucket/prefix`` with the
                ``fsspec`` extra); default ``$SLIPSTREAM_BLOBS`` or ``<state_dir>/blobs``.
            store: the event log's backend name (entry point in ``slipstream.stores``), built with
                the path ``<state_dir>/events.db``.
            **options: `Engine` options (``workers``, ``retry_delay``, ``inline_limit``, ...).
        """
        directory = Path(state_dir or os.environ.get("SLIPSTREAM_STATE_DIR") or Path.home() / ".slipstream")
        event_log = backend("slipstream.stores", store, "the embedded event log")(directory / "events.db")
        built = build_executors(executors if executors is not None else [executor], executor_options)
        blob_location = blobs or os.environ.get("SLIPSTREAM_BLOBS")
        return cls(
            event_log,
            built,
            services=services,
            blobs=blob_store(blob_location, directory / "blobs"),
            catalog=backend("slipstream.catalogs", "sqlite", "the embedded catalog")(directory / "catalog.db"),
            default_executor=executor,
            **_defaults(options, directory),
        )

    @classmethod
    def connect(
        cls,
        postgres: str | None = None,
        nats: str | None = None,
        executor: str = "ray",
        ray_address: str | None = None,
        *,
        executors: Sequence[str | Executor] | None = None,
        executor_options: dict[str, Any] | None = None,
        services: Sequence[Service] = (),
        blobs: str | os.PathLike[str] | None = None,
        store: str = "postgres",
        **options: Any,
    ) -> Engine:
        """An engine on the production store: Postgres at ``postgres`` (or ``$SLIPSTREAM_POSTGRES_DSN``).

        Args:
            postgres: the DSN of the event log's database.
            nats: publish committed events to this NATS JetStream URL (or ``$SLIPSTREAM_NATS_URL``);
                needs an installed event-stream backend (entry point ``nats`` in
                ``slipstream.event_sinks``), else a `ConfigError` says so.
            executor: the default executor's backend name: ``ray`` (the ``ray`` extra; without it
                a `ConfigError` names the extra and ``executor="local"``), or ``local`` to run
                tasks in this process.
            ray_address: the cluster the executors built by name connect to (or
                ``$SLIPSTREAM_RAY_ADDRESS``); an executor that does not connect to a cluster
                refuses it with a `ConfigError`.
            blobs: where large values live, shared by every process that runs or reads executions
                (``s3://bucket/prefix`` with the ``fsspec`` extra, or a shared directory); default
                ``$SLIPSTREAM_BLOBS`` or ``$SLIPSTREAM_STATE_DIR/blobs`` (``~/.slipstream/blobs``).
            store: the event log's backend name (entry point in ``slipstream.stores``), built with
                the DSN.
            executors, executor_options, services, **options: as for `embedded`.

        Raises:
            ConfigError: no DSN, or a setting whose backend is not installed.
        """
        dsn = postgres or os.environ.get("SLIPSTREAM_POSTGRES_DSN")
        if not dsn:
            raise ConfigError(
                "Engine.connect needs a Postgres DSN: pass postgres='postgresql://...' or set SLIPSTREAM_POSTGRES_DSN"
            )
        nats = nats or os.environ.get("SLIPSTREAM_NATS_URL") or None
        stream = event_stream_services(nats)
        address = ray_address or os.environ.get("SLIPSTREAM_RAY_ADDRESS")
        built = build_executors(executors if executors is not None else [executor], executor_options, address)
        event_log = backend("slipstream.stores", store, "the server event log")(dsn)
        state_dir = Path(os.environ.get("SLIPSTREAM_STATE_DIR") or Path.home() / ".slipstream")
        blob_location = blobs or os.environ.get("SLIPSTREAM_BLOBS")
        return cls(
            event_log,
            built,
            services=[*stream, *services],
            blobs=blob_store(blob_location, state_dir / "blobs"),
            catalog=backend("slipstream.catalogs", "postgres", "the server catalog")(dsn),
            default_executor=executor,
            nats=nats,
            **_defaults(options, state_dir),
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await self.store.start()
            stack.push_async_callback(self.store.close)
            if self.blobs is not None:
                await self.blobs.start()
                stack.push_async_callback(self.blobs.close)
            if self._catalog is not None:
                await self._catalog.start()
                stack.push_async_callback(self._catalog.close)
            if self._run_loop:
                self._controller = await self._start_loop(stack)
            await self._start_services(stack)
        except BaseException:
            self._controller = None
            await stack.__aexit__(*sys.exc_info())
            raise
        self._stack = stack
        return self

    async def _start_loop(self, stack: AsyncExitStack) -> Controller:
        from propeller import Controller, PlannerConfig

        controller = Controller(
            self.store,
            self.executors,
            workers=self._workers,
            config=PlannerConfig(
                default_executor=self._default_executor,
                retry_delay=self._retry_delay,
                inline_limit=self._inline_limit,
                live_logs=str(self.live_logs) if self.live_logs is not None else "",
            ),
            clock=self._clock,
            resync_interval=self._resync_interval,
            revisit_interval=self._revisit_interval,
            blobs=self.blobs,
            catalog=self._catalog,
            reservation_ttl=self._reservation_ttl,
            adopt=self._resume,
            project=self.project,
            domain=self.domain,
        )
        heartbeat = controller.reservation_heartbeat()
        self._loop_services = [heartbeat] if heartbeat is not None else []
        for executor in self.executors.values():
            await executor.start(controller.on_task_report, blobs=self.blobs)
            stack.push_async_callback(executor.close)
        # a plain task, not a task group: the caller may enter and exit the engine from
        # different tasks (pytest-asyncio fixtures, frameworks' lifespan hooks)
        started = asyncio.get_running_loop().create_future()
        runner = asyncio.create_task(controller.run(task_status=_Started(started)), name="slipstream-loop")
        stack.push_async_callback(_stop_task, runner)
        await asyncio.wait([started, runner], return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # the loop failed to start: raise its error
        return controller

    async def _start_services(self, stack: AsyncExitStack) -> None:
        controller = self._controller
        context = ServiceContext(
            store=self.store,
            wake=controller.enqueue if controller else _ignore,
            serving=controller is not None,
            catalog=self._catalog,
        )
        for service in [*self.services, *self._loop_services]:
            await service.start(context)
            stack.push_async_callback(service.stop)
            runner = asyncio.create_task(_run_service(service), name=f"slipstream-service:{service.name}")
            stack.push_async_callback(_stop_task, runner)

    def health(self) -> dict[str, ServiceHealth]:
        """How each service is doing, by name (empty without services)."""
        return {service.name or type(service).__name__: service.health() for service in self.services}

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack, self._controller = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def runs_loop(self) -> bool:
        """Whether this engine runs executions (its control loop is started), or is a client."""
        return self._controller is not None

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
        project: str | None = None,
        domain: str | None = None,
        execution_id: str | None = None,
        **inputs: Any,
    ) -> ExecutionHandle:
        """Validate ``inputs`` and start an execution of ``workflow``.

        Raises:
            TypeMismatch, UnknownInput, CompileError: bad inputs; nothing is written.
            InvalidScope: a project that is not a name, or a domain not in ``domains``.
            ConfigError: a task names an executor this engine does not have.
            MissingFile: a ``File``/``Dir`` input names nothing (they are uploaded to the blob store).
        """
        project, domain = self._scoped(project, domain)
        check_scope(project, domain, self.domains)
        if execution_id is not None:
            check_execution_id(execution_id)
        check_input_depth(inputs, self._max_input_depth)
        spec: WorkflowSpec | None = getattr(workflow, "spec", None)
        if spec is None or not hasattr(workflow, "encode_inputs"):
            raise ConfigError(f"launch() needs a @workflow, got {workflow!r}: decorate the function with @workflow")
        check_spec(spec)
        queries = workflow.artifact_inputs(inputs) if hasattr(workflow, "artifact_inputs") else {}
        if self.blobs is not None and hasattr(workflow, "interface"):  # File/Dir inputs travel by content
            inputs = await upload_inputs(inputs, workflow.interface.inputs, self.blobs)
        literals = workflow.encode_inputs(inputs)
        check_input_sizes(literals, self._max_input_bytes)
        artifacts: dict[str, str] = {}
        if queries:
            resolved, artifacts = await self._resolve_artifacts(workflow, queries, project, domain)
            literals.update(resolved)
        self._check_executors(spec)
        if self.blobs is not None:  # stored before ExecutionCreated refers to them
            literals = await offload_outputs(literals, self.blobs, self._inline_limit)
            spec, blobs = offload_spec(spec, self._inline_limit)
            await store_blobs(self.blobs, blobs)
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
            workflow_ref=_code_ref(workflow),
            artifacts=artifacts,
        )
        await self.store.append(execution_id, 0, [created])
        self._workflows[spec.name] = workflow
        if self._controller is not None:  # a client engine leaves it to the serving engines
            self._controller.enqueue(execution_id)
        return ExecutionHandle(self, execution_id, workflow)

    async def _resolve_artifacts(
        self, workflow: Workflow, queries: dict[str, ArtifactQuery], project: str, domain: str
    ) -> tuple[dict[str, bytes], dict[str, str]]:
        """The literals of inputs that come from the catalog, and the artifact each one took: the
        newest of the launch's project (of its domain too, for a domain-scoped engine), as cache
        hits never cross projects either.

        Raises:
            ArtifactNotFound: no artifact answers a query, or it lacks the output asked for.
            TypeMismatch: the artifact's value does not fit the input's type.
            ConfigError: the engine has no catalog.
        """
        name = workflow.spec.name
        if self.catalog is None:
            raise ConfigError(f"workflow {name!r} takes inputs from the catalog ({sorted(queries)}): open an engine "
                              "with a catalog (Engine.embedded and Engine.connect have one)")  # fmt: skip
        literals: dict[str, bytes] = {}
        chosen: dict[str, str] = {}
        for input_name, query in queries.items():
            found = await self.catalog.query(
                query.name, query.partitions, latest=True, project=project, domain=self.domain and domain
            )
            if not found:
                raise ArtifactNotFound(name, input_name, repr(query))
            artifact = found[0]
            literal = artifact.outputs.get(query.output)
            if literal is None:
                why = f"artifact {artifact.id} has no output {query.output!r}; it has {sorted(artifact.outputs)}"
                raise ArtifactNotFound(name, input_name, repr(query), why)
            if not may_hold_references(literal):  # a value in the blob store was typed when stored
                try:
                    from_literal(literal, workflow.interface.inputs[input_name].type)
                except TypeMismatch as exc:
                    raise TypeMismatch(
                        f"workflow {name!r}, input {input_name!r}: artifact {artifact.id} of {query!r} does not fit: "
                        f"{exc}"
                    ) from None
            literals[input_name] = literal
            chosen[input_name] = artifact.id
        return literals, chosen

    def _check_executors(self, spec: WorkflowSpec) -> None:
        names = {node.options.executor for node in spec.task_nodes() if node.options.executor}
        missing = sorted(names - set(self.executors))
        if missing:
            raise ConfigError(
                f"workflow {spec.name!r} uses executor(s) {missing} but this engine has {sorted(self.executors)}: "
                "install and configure them, or drop executor= from those tasks"
            )

    def handle(self, execution_id: str) -> ExecutionHandle:
        """A handle on an existing execution (its outputs are typed when the workflow's module
        imports here, plain values otherwise)."""
        return ExecutionHandle(self, execution_id, None)

    async def outputs(self, execution_id: str, node_id: str | None = None, *, typed: bool = True) -> Any:
        """The outputs of a finished execution, or of one of its nodes, without waiting.

        Args:
            execution_id: the execution.
            node_id: a node (``train``, a dynamic child ``sweep/fit-2``) or a map element (``map_score/17``);
                None for the workflow's outputs.
            typed: decode to the declared Python types when the code imports here (else, and with
                False, plain values: dicts, lists, numbers, strings, None).

        Raises:
            ExecutionNotFound: no such execution. NodeNotFound: no such node.
            ExecutionNotFinished: the workflow's outputs were asked while it runs.
            OutputsNotReady: the node has not succeeded (it failed, runs, or never ran).
            TaskFailed, ExecutionAborted: the execution ended without outputs.
        """
        state = await self._state(execution_id)
        if node_id is not None:
            literals = await self._resolved(node_literals(state, node_id))
            if not typed:
                return plain_outputs(literals)
            return await _downloaded(typed_node_outputs(state, node_id, literals), self.blobs)
        if state.phase not in TERMINAL_STATUSES:
            raise ExecutionNotFinished(execution_id, "read the outputs of", state.phase)
        if not typed:
            _raise_unless_succeeded(state)
            return plain_outputs(await self._resolved(state.outputs or {}))
        return await ExecutionHandle(self, execution_id).outputs()

    def logs(
        self, execution_id: str, node_id: str | None = None, *, attempt: int | None = None, follow: bool = False
    ) -> AsyncIterator[AttemptLogs]:
        """What the execution's attempts printed and logged (stdout, stderr, `current_context().logger`).

        ``async for entry in eng.logs(id): print(entry.node_id, entry.attempt, entry.text)``.
        Each attempt keeps at most 1 MiB of text (its start and its end, with a line saying what was
        dropped), stored in the blob store when it ends.

        Args:
            execution_id: the execution.
            node_id: only this node and its children (a map's elements are ``<map>/<index>``).
            attempt: only this attempt number.
            follow: keep going until the execution ends; attempts running in this process yield
                their new lines as they are written (``running=True``), others when they end.

        Raises:
            ExecutionNotFound: no such execution (when iteration starts).
        """
        check_execution_id(execution_id)
        return read_logs(
            self.store,
            self.blobs,
            execution_id,
            node_id,
            attempt=attempt,
            follow=follow,
            live_dir=self.live_logs,
            visible=self._sees,
        )

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
    ) -> ExecutionList:
        """Executions newest first, filtered, a page of at most ``limit``: its ``next_cursor``,
        passed back as ``cursor``, gives the next page (None after the last).

        Raises:
            ValueError: bad ``limit``, ``status`` or ``cursor``.
        """
        if self.project is not None or self.domain is not None:
            project, domain = self._scoped(project, domain, default=False)
        page = await self.store.list_executions(
            project=project,
            domain=domain,
            status=status,
            workflow=workflow,
            limit=limit,
            cursor=cursor,  # type: ignore[arg-type]
        )
        return ExecutionList(page.items, page.next_cursor)

    async def history(self, execution_id: str) -> list[AnyEvent]:
        """The execution's events in version order. Raises ``ExecutionNotFound``."""
        check_execution_id(execution_id)
        events = await self.store.read(execution_id)
        if not events or not self._sees(events[0]):
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

    def subscribe(
        self,
        project: str | None = None,
        domain: str | None = None,
        execution_id: str | None = None,
        kinds: str | Sequence[str] | None = None,
        durable: str | None = None,
        from_start: bool = False,
    ) -> Subscription:
        """Committed events as they happen: an async iterator of deliveries with ``ack``.

        ::

            async with eng.subscribe(project="ml", kinds=["NodeSucceeded"], durable="audit") as sub:
                async for delivery in sub:
                    print(delivery.event)  # a typed engine.events class
                    await delivery.ack()

        Events come in commit order (each execution's in version order), at least once; an ack is
        cumulative (it covers every event delivered before). Read from JetStream when the engine
        has a ``nats`` URL, else from the event store (the engine must be open). See
        ``engine._subscribe`` for the full semantics.

        Args:
            project, domain, execution_id: only the events of these executions.
            kinds: only these event kinds (class names, or one comma-separated string).
            durable: a name under which the position is kept: the subscription resumes after its
                last ack, and starts at the beginning of the log the first time.
            from_start: a non-durable subscription reads the whole log instead of only new events.

        Raises:
            ConfigError: an unknown kind, ``from_start`` with ``durable``, or a NATS URL whose
                backend is not installed. Connecting to NATS happens when the subscription opens.
        """
        from engine._subscribe import open_subscription

        if self.project is not None or self.domain is not None:
            project, domain = self._scoped(project, domain, default=False)
        return open_subscription(
            self.store,
            self.nats_url,
            project=project,
            domain=domain,
            execution_id=execution_id,
            kinds=kinds,
            durable=durable,
            from_start=from_start,
        )

    async def _resolved(self, literals: dict[str, bytes]) -> dict[str, bytes]:
        """Literals with blob references replaced by their values (read from the blob store)."""
        if self.blobs is None or not any(may_hold_references(value) for value in literals.values()):
            return literals
        resolver = BlobResolver(self.blobs)
        return {name: await resolver.resolve(value) for name, value in literals.items()}

    def _ended_state(self, summary: ExecutionSummary) -> ExecutionState | None:
        """The final state this engine's loop kept of the execution it just ended while we waited,
        when the log is still where ``summary`` says (no need to read and fold it all again), the
        first time it is asked for; else None."""
        if self._controller is None:
            return None
        return self._controller.take_ended_state(summary.execution_id, summary.version)

    async def _state(self, execution_id: str) -> ExecutionState:
        check_execution_id(execution_id)
        events = await self.store.read(execution_id)
        if not events or not self._sees(events[0]):
            raise ExecutionNotFound(execution_id)
        return ExecutionState.fold(events)

    def _summary_in_scope(self, summary: ExecutionSummary) -> bool:
        return (self.project is None or summary.project == self.project) and (
            self.domain is None or summary.domain == self.domain
        )

    def _sees(self, first: AnyEvent) -> bool:
        """Whether this engine's scope includes the execution whose first event is ``first``."""
        if not isinstance(first, ExecutionCreated):
            return self.project is None and self.domain is None
        return (self.project is None or first.project == self.project) and (
            self.domain is None or first.domain == self.domain
        )

    def _scoped(
        self, project: str | None, domain: str | None, *, default: bool = True
    ) -> tuple[str | None, str | None] | tuple[str, str]:
        """``project`` and ``domain`` within this engine's scope (its own when not given; with
        ``default``, ``default``/the first domain for an unscoped engine).

        Raises:
            InvalidScope: one outside the scope.
        """
        for asked, own, what in ((project, self.project, "project"), (domain, self.domain, "domain")):
            if own is not None and asked is not None and asked != own:
                raise InvalidScope(f"this engine is scoped to {what} {own!r}; it cannot use {what} {asked!r}")
        project = project if project is not None else self.project
        domain = domain if domain is not None else self.domain
        if default:
            return ("default" if project is None else project), (self.domains[0] if domain is None else domain)
        return project, domain

    async def _wait_terminal(self, execution_id: str) -> ExecutionSummary:
        check_execution_id(execution_id)
        while True:
            summary = await ride_out(lambda: self.store.get_summary(execution_id))
            if summary is None or not self._summary_in_scope(summary):
                raise ExecutionNotFound(execution_id)
            if summary.status in TERMINAL_STATUSES:
                return summary
            if summary.status == "quarantined":
                # the log decides: a corrupt one raises CorruptEvent (saying where); one restored
                # from a backup before rebuild-projections ran is followed like a running execution
                return await self._follow_log(summary)
            # woken when this process records the end; the timeout covers executions that another
            # process runs (or aborts)
            with anyio.move_on_after(0.5):
                if self._controller is not None:
                    await self._controller.wait_finished(execution_id)
                else:
                    await self.store.wait_for_changes(timeout=0.5, executions_only=True)

    async def _follow_log(self, summary: ExecutionSummary) -> ExecutionSummary:
        """Wait for the execution's end as its log says (folded once, then its tail at each change),
        whatever its projection row says; return the row with the log's status and version."""
        async for details in self.watch(summary.execution_id, interval=0.5):
            if details.status in TERMINAL_STATUSES:
                break
        else:  # watch returns only after yielding a terminal status
            raise AssertionError(f"watching execution {summary.execution_id!r} ended before it did")
        status: ExecutionStatus = details.status  # type: ignore[assignment]  # a terminal one
        return msgspec.structs.replace(
            summary, status=status, updated_at=details.finished_at or summary.updated_at, version=details.version
        )

    async def watch(self, execution_id: str, interval: float = 0.2) -> AsyncIterator[ExecutionDetails]:
        """Yield the execution's details each time it changes, until it ends.

        The log is folded once, then only its new tail at each change. A store outage (a Postgres
        restart) is a pause of up to a minute, not an error.
        """
        state = await ride_out(lambda: self._state(execution_id))
        while True:
            ExecutionState.fold(await ride_out(lambda: self.store.read(execution_id, after=state.version)), state)
            details = details_of(state)
            yield details
            if details.status in TERMINAL_STATUSES:
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
