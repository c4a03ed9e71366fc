"""The ``slipstream`` command line (DESIGN section 11): ``run``, ``serve``, ``executions ...``,
``events tail``, ``lineage run`` and ``catalog ls|show|lineage|evict``.

Only typer and the standard library are imported up front, so that ``slipstream --help`` stays quick;
the engine, rich and the rendering in ``engine._cli_view`` are imported by the commands that use them.

Exit codes: 0 success (or nothing to do), 1 the execution failed or was aborted, 2 bad input or a
store that cannot be used (one line on stderr that names the problem and the fix, never a traceback),
130 interrupted. ``serve``, ``events tail`` and ``lineage run`` install their own SIGTERM and SIGINT
handlers: the first signal stops them gracefully (exit 0), a second one ends the process at once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from engine._cli_admin import add_serving_commands, add_tenancy_commands

if TYPE_CHECKING:
    from engine._details import ExecutionDetails
    from engine._engine import Engine, ExecutionHandle
    from engine._subscribe import Subscription
    from engine._workflow import Workflow
    from engine.interfaces import Artifact, Catalog
    from engine.models import WorkflowSpec

__all__ = ["app", "main"]

ProgressMode = Literal["live", "lines", "none"]
# engine.interfaces.ExecutionStatus, spelled out: importing it here would slow `--help` (a test keeps them equal)
_STATUSES = ("created", "running", "succeeded", "failed", "aborted", "quarantined")


class BadInput(Exception):
    """Something the user typed is wrong; the message names it and the fix (exit code 2)."""


# -- the command tree -------------------------------------------------------------------------------

app = typer.Typer(
    name="slipstream",
    help="Slipstream: run typed workflows and inspect their executions.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
)
executions_app = typer.Typer(
    help="List, inspect, abort and recover executions.", no_args_is_help=True, add_completion=False
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            _write(f"slipstream {version('slipstream')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            _write("slipstream (not installed)")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Slipstream: run typed workflows and inspect their executions."""


app.add_typer(executions_app, name="executions")
events_app = typer.Typer(help="Follow the stream of committed events.", no_args_is_help=True, add_completion=False)
app.add_typer(events_app, name="events")
lineage_app = typer.Typer(help="Emit OpenLineage run events for node runs.", no_args_is_help=True, add_completion=False)
app.add_typer(lineage_app, name="lineage")
catalog_app = typer.Typer(
    help="List, inspect, trace and evict cached artifacts.", no_args_is_help=True, add_completion=False
)
app.add_typer(catalog_app, name="catalog")
admin_app = typer.Typer(
    help="Administer the event store (rebuild what is derived from the log).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(admin_app, name="admin")
add_tenancy_commands(admin_app)  # grant, revoke, grants
add_serving_commands(admin_app)  # serves

StateDir = Annotated[
    str | None,
    typer.Option(
        "--state-dir",
        envvar="SLIPSTREAM_STATE_DIR",
        help="Embedded engine: directory of the SQLite event log (default ~/.slipstream).",
        show_default=False,
    ),
]
Postgres = Annotated[
    str | None,
    typer.Option(
        "--postgres",
        envvar="SLIPSTREAM_POSTGRES_DSN",
        help="Server mode: Postgres DSN of the event store (overrides --state-dir).",
        show_default=False,
    ),
]
Nats = Annotated[
    str | None,
    typer.Option(
        "--nats",
        envvar="SLIPSTREAM_NATS_URL",
        help="NATS JetStream URL of the event stream (server mode).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="Show no progress; print only the result.")]
ScopeProject = Annotated[
    str | None,
    typer.Option(
        "--project",
        envvar="SLIPSTREAM_PROJECT",
        help="Scope: only this project's executions and artifacts (others are not found).",
        show_default=False,
    ),
]
ScopeDomain = Annotated[
    str | None,
    typer.Option(
        "--domain",
        envvar="SLIPSTREAM_DOMAIN",
        help="Scope: only this domain's executions and artifacts.",
        show_default=False,
    ),
]


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    help=(
        "Run WORKFLOW from FILE and show its progress until it ends.\n\n"
        "Inputs follow as --name value (lists, dicts and dataclasses as JSON), e.g.\n\n"
        '    slipstream run pipeline.py:train --epochs 3 --features \'["a", "b"]\''
    ),
)
def run(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Argument(metavar="FILE:WORKFLOW", help="The file and the @workflow in it.", show_default=False),
    ] = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    project: Annotated[
        str, typer.Option(envvar="SLIPSTREAM_PROJECT", help="Project the execution belongs to.")
    ] = "default",
    domain: Annotated[
        str, typer.Option(envvar="SLIPSTREAM_DOMAIN", help="Domain: development, staging or production.")
    ] = "development",
    as_json: AsJson = False,
    no_progress: NoProgress = False,
    show_help: Annotated[
        bool, typer.Option("--help", "-h", help="Show this message; after FILE:WORKFLOW, also the workflow's inputs.")
    ] = False,
) -> None:
    if show_help:
        _write(ctx.get_help())
        if target is not None:
            _write(_inputs_help(load_workflow(target)))
        raise typer.Exit(0)
    if target is None:
        raise BadInput("missing FILE:WORKFLOW: say which workflow to run, e.g. `slipstream run flows.py:train`")
    _scope(project, domain)
    workflow = load_workflow(target)
    inputs = parse_inputs(workflow, ctx.args)
    mode = _progress_mode(as_json, no_progress)

    async def body() -> int:
        if postgres:
            handed = await _run_on_servers(postgres, workflow, project, domain, inputs, mode, as_json)
            if handed is not None:
                return handed
        async with _open_engine(state_dir, postgres) as engine:
            handle = await engine.launch(workflow, project=project, domain=domain, **inputs)
            try:
                return await _follow_and_report(engine, handle, mode, as_json)
            except asyncio.CancelledError:  # Ctrl-C
                await _interrupted(engine, handle.execution_id)
                raise

    raise typer.Exit(_run_async(body, interrupted=""))


# how long `run --postgres` waits for a serving process to take up what it launched before running it itself
_HANDOFF_WAIT = 10.0


async def _run_on_servers(
    postgres: str, workflow: Any, project: str, domain: str, inputs: dict[str, Any], mode: Any, as_json: bool
) -> int | None:
    """``run --postgres`` while serving processes share the store: launch there and follow it.

    Returns ``None`` (nothing launched) when no serving process is up: the caller runs it here.
    Should none take the execution up (none can import its tasks), this process runs it after all.
    """
    import anyio

    from engine._engine import ExecutionHandle
    from engine._outage import ride_out

    async with _open_store(None, postgres) as client:
        loops = await client.store.serving_loops(project, domain)
        if not loops:
            return None
        handle = await client.launch(workflow, project=project, domain=domain, **inputs)
        _note(
            f"handed execution {handle.execution_id} to {loops} serving process(es) (slipstream serve); "
            "following it here"
        )

        async def status() -> str:  # a Postgres restart meanwhile is a pause, as for the rest of the follow
            return (await ride_out(lambda: client.get(handle.execution_id))).status

        with anyio.move_on_after(_HANDOFF_WAIT):
            while await status() == "created":  # noqa: ASYNC110 - another process
                await anyio.sleep(0.1)
        if await status() == "created":
            _note(
                f"no serving process took it up in {_HANDOFF_WAIT:g}s (can they import its tasks? "
                "`slipstream serve --path DIR`): running it in this process"
            )
            async with _open_engine(None, postgres) as engine:
                engine.controller.enqueue(handle.execution_id)
                mine = ExecutionHandle(engine, handle.execution_id, workflow)
                return await _follow_and_report(engine, mine, mode, as_json)
        try:
            return await _follow_and_report(client, handle, mode, as_json)
        except asyncio.CancelledError:  # Ctrl-C: it goes on in the serving processes
            await _interrupted(client, handle.execution_id)
            raise


async def _interrupted(engine: Engine, execution_id: str) -> None:
    """``run`` was interrupted: abort the execution if this process runs it, and say what happened.

    Left running with nobody to run it, it would stay ``running`` in every listing.
    """
    import anyio

    if engine.runs_loop:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await engine.abort(execution_id, "interrupted: Ctrl-C in slipstream run")
        _note(
            f"interrupted: aborted execution {execution_id}; rerun what did not finish with "
            f"`slipstream executions recover {execution_id}`"
        )
    else:
        _note(
            f"interrupted: execution {execution_id} goes on in the serving engines; follow it with "
            f"`slipstream executions watch {execution_id}`"
        )


@app.command()
def serve(
    state_dir: StateDir = None,
    postgres: Postgres = None,
    nats: Nats = None,
    path: Annotated[
        list[str] | None,
        typer.Option("--path", help="A directory to import task modules from (repeatable)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Concurrent reconcile workers.")] = 64,
    sink: Annotated[
        list[str] | None,
        typer.Option(
            "--sink",
            help="Run an event sink (entry point in slipstream.event_sinks) as NAME or NAME=ARG, e.g. "
            "openlineage=file:/var/log/lineage.jsonl (repeatable).",
        ),
    ] = None,
    grace: Annotated[
        float,
        typer.Option(min=0, help="Seconds a stop signal leaves running attempts to finish before cancelling them."),
    ] = 30.0,
    resync_interval: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds between sweeps for unfinished executions (handed back by others)."),
    ] = 30.0,
    executor: Annotated[
        list[str] | None,
        typer.Option(
            "--executor",
            help="Where tasks run (an entry point in slipstream.executors): default 'ray' with --postgres "
            "(the ray extra; a cluster from SLIPSTREAM_RAY_ADDRESS), 'local' with a state dir. Repeatable: "
            "the first is the default, tasks pick the others with executor= (--executor local --executor agents).",
            show_default=False,
        ),
    ] = None,
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    execution_lines: Annotated[
        bool,
        typer.Option(
            "--execution-lines/--no-execution-lines",
            help="Print a line per execution started and ended (the slipstream.executions log). At a thousand "
            "executions a second those lines cost the server about 15 % of its throughput.",
        ),
    ] = True,
) -> None:
    """Run the control loop (and the relay with --nats) until stopped by SIGTERM or Ctrl-C.

    Resumes every unfinished execution of the store whose tasks can be imported here, and runs
    those that clients (`Engine(..., run_loop=False)`, other engines) launch. Several `serve`
    processes may share one store: each execution is leased to one of them at a time. With
    --project/--domain it runs only that project's (and domain's) executions: servers may share a
    store by project, each with its own task code.

    On SIGTERM or SIGINT it stops gracefully: it starts no new attempt, lets the running ones
    finish (up to --grace seconds; those still running then are cancelled and retried by the other
    servers), hands its executions back, stops the relay and the sinks, and exits 0. A second
    signal exits at once.
    """
    for directory in reversed(path or []):
        sys.path.insert(0, str(Path(directory).expanduser().resolve()))
    services = _sinks(sink or [])
    scope = _scope(project, domain)

    async def body() -> int:
        signals = _Signals()
        if execution_lines:
            _log_to_stderr("slipstream.executions")  # a line per execution started and ended here
        _log_to_stderr("slipstream.store")  # a line when the store is lost, one when it is back
        _log_to_stderr("slipstream.propeller")  # executions it leaves to others, rounds that fail
        if nats:
            _log_to_stderr("slipstream.nats")  # when this server's relay publishes, stands by, retries
        chosen = {"executor": executor[0], "executors": executor} if executor else {}
        engine = await _open_when_reachable(
            lambda: _make_engine(
                state_dir,
                postgres,
                nats,
                workers=workers,
                services=services,
                resync_interval=resync_interval,
                **chosen,
                **scope,
            ),
            signals,
        )
        if engine is None:
            _note("stopped")
            return 0
        async with AsyncExitStack() as stack:
            stack.push_async_exit(engine.__aexit__)
            signals.install()
            where = "Postgres" if postgres else f"state dir {state_dir or '(default)'}"
            if scope:
                where += " in " + ", ".join(f"{name} {value}" for name, value in scope.items())
            _note(f"serving executions of {where} with {workers} workers; SIGTERM or Ctrl-C to stop")
            await signals.stop.wait()
            _note(
                f"{signals.name}: stopping; waiting up to {grace:g}s for running attempts "
                "(a second signal exits at once)"
            )
            signals.exit_after(grace + _SHUTDOWN_MARGIN)
            if not await engine.controller.drain(grace):
                _note("grace period over: cancelling the attempts still running; the other servers retry them")
        _note("stopped")
        return 0

    raise typer.Exit(_run_async(body))


async def _open_when_reachable(make: Callable[[], Engine], signals: _Signals) -> Engine | None:
    """A fresh engine from ``make`` entered; while its store cannot be reached, say so once and try
    again (a server may start before its database, as after a reboot); None if a stop signal came
    first. Errors that waiting does not fix (a bad DSN, a missing database) are raised at once."""
    from engine.errors import StoreUnavailable

    lost_at: float | None = None
    pause = 0.5
    while True:
        engine = make()
        try:
            await engine.__aenter__()
        except StoreUnavailable as exc:
            if lost_at is None:
                lost_at = time.monotonic()
                _note(f"{exc}; retrying until it answers (SIGTERM or Ctrl-C to stop)")
            with suppress(TimeoutError):
                await asyncio.wait_for(signals.stop.wait(), pause)
            if signals.stop.is_set():
                return None
            pause = min(pause * 2, 5.0)
            continue
        if lost_at is not None:
            _note(f"the event store answered after {time.monotonic() - lost_at:.1f} s")
        return engine


def _log_to_stderr(name: str) -> None:
    """Print the records of logger ``name`` from INFO up on stderr, with their time."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _sinks(specs: list[str]) -> list[Any]:
    """The event sinks named by ``--sink NAME[=ARG]``, built from their entry points."""
    from engine._wiring import backend

    built = []
    for spec in specs:
        name, eq, arg = spec.partition("=")
        if not name:
            raise BadInput(f"--sink {spec!r} names no sink: write NAME or NAME=ARG, e.g. --sink openlineage")
        cls = backend("slipstream.event_sinks", name.strip(), "--sink")
        try:
            built.append(cls(arg) if eq else cls())
        except TypeError as exc:
            raise BadInput(f"--sink {spec!r}: {exc}; give the sink's argument as NAME=ARG") from exc
    return built


@events_app.command("tail")
def events_tail(
    execution: Annotated[str | None, typer.Option("--execution", help="Only this execution's events.")] = None,
    kinds: Annotated[
        str | None, typer.Option("--kinds", help="Only these event kinds, comma-separated (e.g. NodeSucceeded).")
    ] = None,
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Print the whole log first, then follow (default: new events only).")
    ] = False,
    durable: Annotated[
        str | None,
        typer.Option(help="Resume after the events this named subscription printed last time (and remember)."),
    ] = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    nats: Nats = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
) -> None:
    """Follow committed events and print one line per event, until SIGTERM or Ctrl-C.

    Reads from JetStream with --nats, else from the event store (--state-dir or --postgres).
    """
    scope = _scope(project, domain)

    async def body() -> int:
        from engine._subscribe import open_subscription

        filters: dict[str, Any] = {
            "project": project,
            "domain": domain,
            "execution_id": execution,
            "kinds": kinds,
            "durable": durable,
            "from_start": from_start,
        }
        signals = _Signals()
        if nats:  # the stream needs no store
            await signals.until_stopped(_print_events(open_subscription(None, nats, **filters), as_json))
            return 0
        async with _open_store(state_dir, postgres, scope) as engine:
            await signals.until_stopped(_print_events(engine.subscribe(**filters), as_json))
        return 0

    raise typer.Exit(_run_async(body))


async def _print_events(subscription: Subscription, as_json: bool) -> None:
    if as_json:
        from engine.events import encode_event_json

        render: Any = lambda event: encode_event_json(event).decode()  # noqa: E731
    else:
        from engine._cli_view import event_line

        render = event_line
    async with subscription:
        async for delivery in subscription:
            try:
                _write(render(delivery.event))
            except BrokenPipeError:  # `slipstream events tail | head`: the reader is gone
                sys.stderr.close()
                os._exit(0)
            await delivery.ack()


@lineage_app.command("run")
def lineage_run(
    transport: Annotated[
        str | None,
        typer.Option(
            help="Where RunEvents go: console, file:PATH, http(s)://URL, kafka://BROKERS/TOPIC, "
            "nats://HOST:PORT/SUBJECT; default: the OpenLineage client's own configuration "
            "(openlineage.yml, OPENLINEAGE_URL, OPENLINEAGE__TRANSPORT__*).",
            show_default=False,
        ),
    ] = None,
    durable: Annotated[str, typer.Option(help="The name under which the position in the log is kept.")] = "openlineage",
    state_dir: StateDir = None,
    postgres: Postgres = None,
) -> None:
    """Turn node runs into OpenLineage RunEvents, from where it stopped last time, until stopped."""

    async def body() -> int:
        from engine._wiring import backend
        from engine.interfaces import ServiceContext

        cls = backend("slipstream.event_sinks", "openlineage", "lineage (pip install 'slipstream[openlineage]')")
        sink = cls(transport, durable=durable)
        signals = _Signals()
        async with _open_store(state_dir, postgres) as engine:
            await sink.start(ServiceContext(store=engine.store, wake=_ignore, catalog=engine.catalog))
            try:
                _note(f"emitting OpenLineage events through {sink.describe()}; SIGTERM or Ctrl-C to stop")
                await signals.until_stopped(sink.run())
            finally:
                await sink.stop()
        return 0

    raise typer.Exit(_run_async(body))


def _ignore(execution_id: str) -> None:
    return None


# -- signals ----------------------------------------------------------------------------------------

# seconds after the grace period for the services, executors and store to close before a hard exit
_SHUTDOWN_MARGIN = 15.0


class _Signals:
    """SIGTERM and SIGINT handlers of our own, installed whatever the process inherited (a service
    manager or a shell may start it with SIGINT ignored): the first signal sets `stop`, a second
    ends the process at once (exit status 128 + signal number). Build it inside the event loop."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.name = ""
        self.install()

    def install(self) -> None:
        """Put the handlers (back) in place: a backend started since may have put its own there
        (Ray's core worker does, and ends the process with SIGABRT on SIGTERM)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._received, signum)

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set():
            _note(f"{name} again: exiting now")
            os._exit(128 + signum)
        self.name = name
        self.stop.set()

    def exit_after(self, seconds: float) -> None:
        """End the process (exit status 1) if it is still shutting down ``seconds`` from now."""

        def expire() -> None:
            _note(f"still shutting down {seconds:g}s after {self.name}: exiting now")
            os._exit(1)

        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        timer.start()

    async def until_stopped(self, work: Awaitable[Any]) -> None:
        """Run ``work`` until it ends (its error is raised) or a signal arrives (it is cancelled)."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, stopper):
                pending.cancel()
            await asyncio.gather(task, stopper, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


@executions_app.command("list")
def list_executions(
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    status: Annotated[
        str | None, typer.Option(help=f"Only these statuses, comma-separated: {', '.join(_STATUSES)}.")
    ] = None,
    workflow: Annotated[str | None, typer.Option(help="Only executions of this workflow (its name).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="Continue after the previous page (its next_cursor).", show_default=False)
    ] = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"executions": [...], "next_cursor": ...} as JSON.')
    ] = False,
) -> None:
    """List executions, newest first, a page at a time."""
    scope = _scope(project, domain)
    statuses = _statuses(status)

    async def body() -> int:
        import msgspec

        async with _open_store(state_dir, postgres, scope) as engine:
            try:
                found = await engine.list_executions(
                    project=project, domain=domain, status=statuses, workflow=workflow, limit=limit, cursor=cursor
                )
            except ValueError as exc:  # a cursor that is not one of ours
                raise BadInput(f"--cursor {cursor!r}: {exc}; pass the next_cursor a previous page printed") from None
        if as_json:
            _write(msgspec.json.encode({"executions": list(found), "next_cursor": found.next_cursor}).decode())
        else:
            from engine._cli_view import executions_table

            _console().print(executions_table(found) if found else "no executions")
            if found.next_cursor:
                _note(f"more: slipstream executions list --limit {limit} --cursor {found.next_cursor}")
        return 0

    raise typer.Exit(_run_async(body))


@executions_app.command("show")
def show(
    execution_id: Annotated[str, typer.Argument(metavar="ID")],
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
) -> None:
    """Show an execution: its status and every node's phase, attempt, error and map progress."""
    scope = _scope(project, domain)

    async def body() -> int:
        import msgspec

        async with _open_store(state_dir, postgres, scope) as engine:
            details = await engine.get(execution_id)
            values = await _values(engine, execution_id, details.status)
        if as_json:
            data = msgspec.to_builtins(details)
            data["counts"] = details.counts
            data.update(values)
            _write(msgspec.json.encode(data).decode())
        else:
            from engine._cli_view import details_table, values_lines

            _console().print(details_table(details, _now()))
            for line in values_lines(values):
                _console().print(line, highlight=False, markup=False)
        return 0

    raise typer.Exit(_run_async(body))


async def _values(engine: Engine, execution_id: str, status: str) -> dict[str, Any]:
    """The execution's inputs, and its outputs once it succeeded, as plain values."""
    from engine._outputs import plain_value

    created = (await engine.history(execution_id))[0]
    inputs = await engine._resolved(getattr(created, "inputs", {}))
    values: dict[str, Any] = {"inputs": {name: plain_value(literal) for name, literal in inputs.items()}}
    if status == "succeeded":
        values["outputs"] = await engine.outputs(execution_id, typed=False)
    return values


@executions_app.command("outputs")
def outputs(
    execution_id: Annotated[str, typer.Argument(metavar="ID")],
    node: Annotated[
        str | None,
        typer.Option("--node", help="A node (`train`, a dynamic child `sweep/fit-2`) or map element (`map_score/17`)."),
    ] = None,
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
) -> None:
    """Print the outputs of a finished execution, or of one node (typed when the code imports here)."""
    scope = _scope(project, domain)

    async def body() -> int:
        import msgspec

        async with _open_store(state_dir, postgres, scope) as engine:
            value = await engine.outputs(execution_id, node, typed=not as_json)
        if as_json:
            _write(msgspec.json.encode(value).decode())
        else:
            from rich.pretty import Pretty

            _console().print(Pretty(value))
        return 0

    raise typer.Exit(_run_async(body))


@executions_app.command("watch")
def watch(
    execution_id: Annotated[str, typer.Argument(metavar="ID")],
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
    no_progress: NoProgress = False,
) -> None:
    """Follow an execution started elsewhere with the live view of `run`, then print its outputs
    (exit 0) or its failure (exit 1)."""
    scope = _scope(project, domain)
    mode = _progress_mode(as_json, no_progress)

    async def body() -> int:
        async with _open_store(state_dir, postgres, scope) as engine:
            return await _follow_and_report(engine, engine.handle(execution_id), mode, as_json)

    raise typer.Exit(_run_async(body))


@app.command("logs")
def logs(
    execution_id: Annotated[str, typer.Argument(metavar="ID")],
    node: Annotated[
        str | None, typer.Option("--node", help="Only this node and its children (a map element: `map_score/17`).")
    ] = None,
    attempt: Annotated[int | None, typer.Option("--attempt", min=1, help="Only this attempt.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the execution ends.")] = False,
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
) -> None:
    """Print what an execution's attempts printed and logged, each under a header naming the node
    and attempt (one JSON object per attempt with --json)."""
    scope = _scope(project, domain)

    async def body() -> int:
        import msgspec

        async with _open_store(state_dir, postgres, scope) as engine:
            async for entry in engine.logs(execution_id, node, attempt=attempt, follow=follow):
                if as_json:
                    _write(msgspec.json.encode(entry).decode())
                else:
                    if not entry.running:
                        _write(f"==> {entry.node_id} attempt {entry.attempt} <==")
                    _write(entry.text.rstrip("\n"))
        return 0

    raise typer.Exit(_run_async(body))


@executions_app.command("history")
def history(
    execution_id: Annotated[str, typer.Argument(metavar="ID")],
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
) -> None:
    """Show an execution's events in version order."""
    scope = _scope(project, domain)

    async def body() -> int:
        async with _open_store(state_dir, postgres, scope) as engine:
            events = await engine.history(execution_id)
        if as_json:
            import msgspec

            from engine._cli_view import event_json

            for event in events:
                _write(msgspec.json.encode(event_json(event)).decode())
        else:
            from engine._cli_view import history_table

            _console().print(history_table(events))
        return 0

    raise typer.Exit(_run_async(body))


@executions_app.command("verify")
def verify(
    execution_id: Annotated[
        str | None, typer.Argument(metavar="ID", help="Only this execution (default: all).")
    ] = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per execution.")] = False,
    project: ScopeProject = None,
    domain: ScopeDomain = None,
) -> None:
    """Check event logs (each execution's checksum chain and payloads) and the executions
    projection against them: one line per problem; exit 1 if anything is wrong. With a scope,
    only the executions whose log or projection row is in it."""
    scope = _scope(project, domain)

    async def body() -> int:
        import msgspec

        from engine._verify import verify_execution, verify_store

        checked = corrupt = disagree = 0
        async with _open_store(state_dir, postgres) as engine:
            if execution_id is not None:
                checks = _one(await verify_execution(engine.store, execution_id, **scope))
            else:
                checks = verify_store(engine.store, **scope)
            async for check in checks:
                checked += 1
                corrupt += bool(check.corrupt)
                disagree += bool(check.projection)
                if as_json:
                    data = msgspec.to_builtins(check)
                    data["ok"] = check.ok
                    _write(msgspec.json.encode(data).decode())
                    continue
                if check.corrupt:
                    _write(f"CORRUPT {check.execution_id} at version {check.corrupt_version}: {check.corrupt}")
                if check.projection:
                    _write(f"PROJECTION {check.execution_id}: {'; '.join(check.projection)}")
                if check.ok and execution_id is not None:
                    legacy = f", {check.legacy} unchained legacy" if check.legacy else ""
                    _write(f"ok {check.execution_id}: {check.events} events{legacy}, head {check.head or '-'}")
        if not as_json:
            _note(
                f"checked {checked} executions: {corrupt} with a corrupt log, "
                f"{disagree} with a projection row that disagrees"
            )
            if corrupt:
                _note("restore the events of corrupt executions from a backup; the loop leaves them quarantined")
            if disagree and not corrupt:
                _note("repair the projection with `slipstream admin rebuild-projections`")
        return 1 if corrupt or disagree else 0

    raise typer.Exit(_run_async(body))


async def _one(check: Any) -> AsyncIterator[Any]:
    yield check


@admin_app.command("rebuild-projections")
def rebuild_projections(
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
    # read only to refuse them (from the environment, mostly): the rebuild has no scope
    project: Annotated[str | None, typer.Option("--project", envvar="SLIPSTREAM_PROJECT", hidden=True)] = None,
    domain: Annotated[str | None, typer.Option("--domain", envvar="SLIPSTREAM_DOMAIN", hidden=True)] = None,
) -> None:
    """Rebuild the executions projection from the event log: rows that disagree with the log or
    are missing are rewritten, rows without events removed, executions with a corrupt log marked
    quarantined. Safe while loops run. It rewrites the whole store: it refuses a scope."""
    if project is not None or domain is not None:
        # a scope here would be ignored: say so rather than rewrite every project's rows
        raise BadInput(
            "rebuild-projections rewrites the whole store: unset SLIPSTREAM_PROJECT/SLIPSTREAM_DOMAIN "
            "(and drop --project/--domain)"
        )

    async def body() -> int:
        import msgspec

        from engine._verify import rebuild_projections

        async with _open_store(state_dir, postgres) as engine:
            report = await rebuild_projections(engine.store)
        if as_json:
            _write(msgspec.json.encode(report).decode())
            return 0
        _write(
            f"{report.executions} executions in the log: {len(report.rewritten)} rows rewritten, "
            f"{len(report.removed)} removed, {len(report.quarantined)} quarantined, {len(report.skipped)} skipped"
        )
        for what, ids in (
            ("rewritten", report.rewritten),
            ("removed", report.removed),
            ("quarantined", report.quarantined),
            ("skipped", report.skipped),
        ):
            for found in ids:
                _write(f"{what} {found}")
        return 0

    raise typer.Exit(_run_async(body))


@executions_app.command("abort")
def abort(
    execution_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option(help="Recorded in the ExecutionAborted event.")] = "aborted by user",
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
) -> None:
    """Abort an execution; aborting one that already ended does nothing."""
    scope = _scope(project, domain)

    async def body() -> int:
        import msgspec

        from engine.interfaces import TERMINAL_STATUSES

        async with _open_store(state_dir, postgres, scope) as engine:
            details = await engine.get(execution_id)
            aborted = details.status not in TERMINAL_STATUSES
            if aborted:
                await engine.abort(execution_id, reason)
        if as_json:
            status = "aborted" if aborted else details.status
            _write(msgspec.json.encode({"execution_id": execution_id, "aborted": aborted, "status": status}).decode())
        elif aborted:
            _write(f"aborted execution {execution_id}")
        else:
            _write(f"execution {execution_id} already {details.status}; nothing to abort")
        return 0

    raise typer.Exit(_run_async(body))


@executions_app.command("recover")
def recover(
    execution_id: Annotated[str, typer.Argument(metavar="ID")],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Run the new execution here and show its progress.")
    ] = True,
    path: Annotated[
        list[str] | None,
        typer.Option("--path", help="Directory to import task modules from (repeatable), e.g. the workflow file's."),
    ] = None,
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
    no_progress: NoProgress = False,
) -> None:
    """Start a new execution that reuses every node ID finished and runs the rest; print its id."""
    scope = _scope(project, domain)
    for directory in reversed(path or []):
        resolved = str(Path(directory).expanduser().resolve())
        if not Path(resolved).is_dir():
            raise BadInput(f"--path {directory!r} is not a directory; pass the directory holding the task modules")
        if resolved not in sys.path:
            sys.path.insert(0, resolved)
    mode = _progress_mode(as_json, no_progress)

    async def body() -> int:
        if not wait:
            async with _open_store(state_dir, postgres, scope) as engine:
                new_id = await _record_recovery(engine, execution_id)
            if as_json:
                import msgspec

                _write(msgspec.json.encode({"execution_id": new_id, "recovers": execution_id}).decode())
            else:
                _write(new_id)
            if not postgres and not as_json:
                _note(
                    "embedded mode: the new execution runs when `slipstream serve` (or an embedded engine) that can "
                    "import its tasks next opens this state dir; use --wait (with --path DIR for the task modules) "
                    "to run it now"
                )
            return 0
        async with _open_engine(state_dir, postgres, scope) as engine:
            _check_importable(await _specs_of(engine, execution_id))
            handle = await engine.recover(execution_id)
            if not as_json:
                _write(f"recovering {execution_id} as {handle.execution_id}")
            return await _follow_and_report(engine, handle, mode, as_json)

    raise typer.Exit(_run_async(body))


# -- loading a workflow from a file -----------------------------------------------------------------


def load_workflow(target: str) -> Workflow:
    """Import ``FILE`` as a module named after its stem and return its ``@workflow`` ``WORKFLOW``.

    The file's directory goes first on ``sys.path`` and the module into ``sys.modules``, so that
    its tasks are importable by module path (what executors and ``recover --path`` rely on).

    Raises:
        BadInput: no ``:WORKFLOW``, the file is missing, or it holds no such workflow.
    """
    from engine._workflow import Workflow
    from engine.errors import SlipstreamError

    if target.startswith("-"):
        raise BadInput(
            f"expected FILE:WORKFLOW first, got option {target!r}; write `slipstream run FILE:WORKFLOW --name value`"
        )
    file_text, sep, name = target.rpartition(":")
    if not sep or not file_text or not name:
        example = f"{file_text or target or 'pipeline.py'}:my_workflow"
        raise BadInput(f"{target!r} names no workflow: write FILE:WORKFLOW, e.g. `slipstream run {example}`")
    path = Path(file_text).expanduser().resolve()
    if not path.is_file():
        raise BadInput(f"file {file_text!r} not found (looked for {path}); check the path in FILE:WORKFLOW")
    stem = path.stem
    if not stem.isidentifier():
        raise BadInput(f"{path.name}: module name {stem!r} is not a Python identifier; rename the file")
    module = sys.modules.get(stem)
    if module is not None:
        loaded_from = getattr(module, "__file__", None)
        if loaded_from is None or Path(loaded_from).resolve() != path:
            raise BadInput(
                f"{path.name}: module name {stem!r} clashes with the already imported module {module.__name__!r} "
                f"({loaded_from or 'built in'}); rename the file"
            )
    else:
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[stem] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(stem, None)
            if isinstance(exc, SlipstreamError):  # a workflow that does not compile: its own message
                raise
            raise BadInput(f"{path.name} failed to import: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            sys.modules.pop(stem, None)
            raise
    found = sorted(key for key, value in vars(module).items() if isinstance(value, Workflow))
    listed = ", ".join(found) if found else "none"
    obj = getattr(module, name, None)
    if obj is None:
        raise BadInput(f"no workflow {name!r} in {file_text}; workflows found there: {listed}")
    if not isinstance(obj, Workflow):
        raise BadInput(
            f"{name!r} in {file_text} is an object of type {type(obj).__name__}, not a workflow: "
            f"decorate it with @workflow, or pick one of: {listed}"
        )
    return obj


def _inputs_help(workflow: Workflow) -> str:
    """The workflow's inputs as ``--name TYPE`` lines, with defaults, as `run` takes them."""
    import msgspec

    from engine._outputs import plain_value

    spec = workflow.spec
    lines = [f"\nInputs of workflow {workflow.name!r} (lists, dicts and dataclasses as JSON):"]
    if not spec.inputs:
        lines.append("  (none)")
    for typed in spec.inputs:
        default = spec.defaults.get(typed.name)
        shown = f"  [default: {msgspec.json.encode(plain_value(default)).decode()}]" if default is not None else ""
        required = "" if typed.optional or default is not None else "  [required]"
        lines.append(f"  --{typed.name}  {typed.type}{shown}{required}")
    return "\n".join(lines)


def input_options(args: Iterable[str], names: list[str]) -> dict[str, str]:
    """Turn the extra ``--name value`` / ``--name=value`` arguments into name -> string.

    ``--some-name`` also matches the input ``some_name``; a ``--flag`` followed by no value (or by
    another ``--option``) means ``true``. Unknown names are left to ``Workflow.parse_cli_inputs``.

    Raises:
        BadInput: an argument that is not an option.
    """
    raw: dict[str, str] = {}
    pending = list(args)
    while pending:
        arg = pending.pop(0)
        if not arg.startswith("--") or arg == "--":
            hint = f"; inputs are given as --name value ({', '.join(f'--{n}' for n in names)})" if names else ""
            raise BadInput(f"unexpected argument {arg!r}{hint}")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if pending and not pending[0].startswith("--"):
                value = pending.pop(0)
            else:
                value = "true"
        if name not in names and name.replace("-", "_") in names:
            name = name.replace("-", "_")
        if name in raw:
            raise BadInput(f"input --{name} given twice; give it once")
        raw[name] = value
    return raw


def parse_inputs(workflow: Workflow, args: Iterable[str]) -> dict[str, Any]:
    """The workflow's inputs from the extra ``run`` arguments, validated before any store is opened.

    Raises:
        BadInput: an unknown option, or a required input left out.
        TypeMismatch: a value does not parse as its input's type.
    """
    from engine._literals import type_repr

    interface = workflow.interface.inputs
    raw = input_options(args, list(interface))
    accepted = ", ".join(f"--{n} ({type_repr(s.type)})" for n, s in interface.items()) or "none"
    unknown = [n for n in raw if n not in interface]
    if unknown:
        raise BadInput(
            f"workflow {workflow.name!r} has no input {unknown[0]!r} (--{unknown[0]}); its inputs are: {accepted}"
        )
    missing = [n for n in workflow.interface.required_inputs() if n not in raw]
    if missing:
        raise BadInput(
            f"workflow {workflow.name!r} needs input(s) {', '.join(f'--{n}' for n in missing)}; its inputs are: "
            f"{accepted}"
        )
    inputs = workflow.parse_cli_inputs(raw)
    workflow.encode_inputs(inputs)
    return inputs


# -- the catalog ------------------------------------------------------------------------------------


@catalog_app.command("ls")
def catalog_ls(
    task: Annotated[str | None, typer.Option(help="Only artifacts of this task (its module.qualname).")] = None,
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
) -> None:
    """List cached artifacts, newest first."""
    scope = _scope(project, domain)

    async def body() -> int:
        import msgspec

        from engine import _cli_catalog as view

        async with _open_catalog(state_dir, postgres, scope) as catalog:
            found = await catalog.list_artifacts(task=task, project=project, domain=domain, limit=limit)
        if as_json:
            _write(msgspec.json.encode([view.artifact_json(a) for a in found]).decode())
        else:
            _console().print(view.artifacts_table(found) if found else "no artifacts")
        return 0

    raise typer.Exit(_run_async(body))


@catalog_app.command("show")
def catalog_show(
    artifact_id: Annotated[str, typer.Argument(metavar="ARTIFACT", help="An artifact id, or its first 8+ digits.")],
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
) -> None:
    """Show an artifact: its task, the run that produced it, its names and its outputs."""
    scope = _scope(project, domain)

    async def body() -> int:
        import msgspec

        from engine import _cli_catalog as view

        async with _open_catalog(state_dir, postgres, scope) as catalog:
            artifact = await _artifact(catalog, artifact_id)
        if as_json:
            _write(msgspec.json.encode(view.artifact_json(artifact)).decode())
        else:
            for line in view.artifact_lines(artifact):
                _write(line)
        return 0

    raise typer.Exit(_run_async(body))


@catalog_app.command("lineage")
def catalog_lineage(
    artifact_id: Annotated[str, typer.Argument(metavar="ARTIFACT", help="An artifact id, or its first 8+ digits.")],
    direction: Annotated[
        str, typer.Option(help="upstream (what it was made from) or downstream (what was made from it).")
    ] = "upstream",
    depth: Annotated[int | None, typer.Option(min=1, help="At most this many steps (default: all).")] = None,
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
) -> None:
    """Show the artifacts an artifact was made from, or that were made from it, as a tree."""
    scope = _scope(project, domain)
    if direction not in ("upstream", "downstream"):
        raise BadInput(f"--direction must be upstream or downstream, not {direction!r}")

    async def body() -> int:
        import msgspec

        from engine import _cli_catalog as view

        async with _open_catalog(state_dir, postgres, scope) as catalog:
            root = await _artifact(catalog, artifact_id)
            # scoped, the catalog is a ScopedCatalog: its lineage leaves out what other projects made
            # from the artifact, or it from theirs
            graph = await catalog.lineage(root.id, direction=direction, depth=depth)  # type: ignore[arg-type]
            artifacts = {found: await catalog.get(found) for found in graph.depths}
        if as_json:
            _write(msgspec.json.encode(view.lineage_json(graph, artifacts)).decode())
        else:
            for line in view.lineage_lines(graph, artifacts):
                _write(line)
        return 0

    raise typer.Exit(_run_async(body))


@catalog_app.command("evict")
def catalog_evict(
    artifact_id: Annotated[
        str | None, typer.Argument(metavar="[ARTIFACT]", help="The artifact to remove (id or 8+ digits).")
    ] = None,
    task: Annotated[str | None, typer.Option(help="Remove every artifact of this task instead.")] = None,
    project: ScopeProject = None,
    domain: ScopeDomain = None,
    state_dir: StateDir = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
) -> None:
    """Remove cached artifacts: the next run of their task computes them again."""
    scope = _scope(project, domain)
    if (artifact_id is None) == (task is None):
        raise BadInput("name one ARTIFACT or pass --task TASK (see `slipstream catalog ls`)")

    async def body() -> int:
        import msgspec

        async with _open_catalog(state_dir, postgres, scope) as catalog:
            if artifact_id is not None:
                removed = await catalog.evict(artifact_id=(await _artifact(catalog, artifact_id)).id)
            else:  # scoped, the catalog is a ScopedCatalog: only the scope's artifacts of the task
                removed = await catalog.evict(task=task)
        if as_json:
            _write(msgspec.json.encode({"evicted": removed}).decode())
        else:
            _write(f"evicted {removed} artifact{'s' if removed != 1 else ''}")
        return 0

    raise typer.Exit(_run_async(body))


@asynccontextmanager
async def _open_catalog(
    state_dir: str | None, postgres: str | None, scope: dict[str, str] | None = None
) -> AsyncIterator[Catalog]:
    """The catalog of the store a client engine opens (embedded: ``<state_dir>/catalog.db``)."""
    async with _open_store(state_dir, postgres, scope) as engine:
        if engine.catalog is None:
            raise BadInput("this engine has no catalog")
        yield engine.catalog


async def _artifact(catalog: Catalog, artifact_id: str) -> Artifact:
    found = await catalog.get(artifact_id)  # a scoped engine's catalog does not find other projects' artifacts
    if found is None:
        raise BadInput(
            f"no artifact {artifact_id!r} in the catalog (or the prefix is ambiguous or shorter than 8 digits); "
            "list them with `slipstream catalog ls`"
        )
    return found


# -- engines ----------------------------------------------------------------------------------------


def _make_engine(state_dir: str | None, postgres: str | None, nats: str | None = None, **options: Any) -> Engine:
    from engine._engine import Engine

    if postgres:
        return Engine.connect(postgres=postgres, nats=nats, **options)
    if nats:
        raise BadInput(
            f"--nats {nats!r} (or SLIPSTREAM_NATS_URL) needs --postgres: the relay publishes the server store's "
            "events; drop --nats for an embedded state dir"
        )
    return Engine.embedded(state_dir, **options)


@asynccontextmanager
async def _open_engine(
    state_dir: str | None, postgres: str | None, scope: dict[str, str] | None = None
) -> AsyncIterator[Engine]:
    """A running engine (store, executors, control loop) for the execution this command starts:
    other unfinished executions of the store are left to `serve` (this process would wait for
    their tasks at exit, then throw their results away)."""
    async with _make_engine(state_dir, postgres, resume=False, **(scope or {})) as engine:
        yield engine


@asynccontextmanager
async def _open_store(
    state_dir: str | None, postgres: str | None, scope: dict[str, str] | None = None
) -> AsyncIterator[Engine]:
    """A client engine (no loop): reading and aborting must not resume (and then abandon) the
    unfinished executions of the store. ``scope`` (`_scope`) scopes it to a project and domain."""
    # a client runs no attempts: it needs no executor of its own (nor Ray, with --postgres)
    async with _make_engine(state_dir, postgres, run_loop=False, executor="local", **(scope or {})) as engine:
        yield engine


async def _record_recovery(engine: Engine, execution_id: str) -> str:
    """Write the recovering execution without running it (the engine's loop is not started here).

    With the loop running, the new execution would start here and be abandoned mid-attempt when the
    command exits (or fail outright, its task modules not being importable in this process).
    """
    return (await engine.recover(execution_id)).execution_id


async def _specs_of(engine: Engine, execution_id: str) -> list[WorkflowSpec]:
    from engine.events import DynamicExpanded, ExecutionCreated

    specs: list[WorkflowSpec] = []
    for event in await engine.history(execution_id):
        if isinstance(event, ExecutionCreated | DynamicExpanded):
            specs.append(event.spec)
    return specs


def _check_importable(specs: list[WorkflowSpec]) -> None:
    """Fail early, naming ``--path``, when a task module of the recovered execution cannot be imported."""
    modules = {node.task.module for spec in specs for node in spec.task_nodes() if node.task.pickled is None}
    missing = []
    for module in sorted(modules):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    if missing:
        raise BadInput(
            f"task module(s) {missing} cannot be imported here; pass --path DIR for the directory that holds "
            f"them (e.g. the workflow file's directory)"
        )


# -- following an execution -------------------------------------------------------------------------


def _progress_mode(as_json: bool, no_progress: bool) -> ProgressMode:
    if as_json or no_progress:
        return "none"
    return "live" if sys.stdout.isatty() else "lines"


async def _follow(engine: Engine, execution_id: str, mode: ProgressMode) -> ExecutionDetails:
    """Show progress in ``mode`` until the execution ends; return its last details."""
    if mode == "none":
        from engine._outage import ride_out

        await engine.handle(execution_id).wait()
        return await ride_out(lambda: engine.get(execution_id))
    from engine import _cli_view as view

    last: ExecutionDetails | None = None
    if mode == "lines":
        async for details in engine.watch(execution_id):
            for line in view.node_lines(last, details):
                _write(line)
            if last is None or details.status != last.status:
                _write(view.status_line(details, _now()))
            last = details
    else:
        from rich.live import Live

        with Live(console=_console(), refresh_per_second=8, transient=False) as live:
            async for details in engine.watch(execution_id):
                live.update(view.progress_view(details, _now()), refresh=details != last)
                last = details
    assert last is not None
    return last


async def _follow_and_report(engine: Engine, handle: ExecutionHandle, mode: ProgressMode, as_json: bool) -> int:
    """Follow the execution, then print its outputs (0) or its failure (1)."""
    import msgspec

    from engine.errors import ExecutionAborted, TaskFailed

    details = await _follow(engine, handle.execution_id, mode)
    value: Any = None
    error: dict[str, Any] | None = None
    try:
        value = await handle.outputs()
    except TaskFailed as exc:
        error = {
            "node_id": exc.node_id,
            "kind": exc.error_kind,
            "message": exc.message,
            "traceback": exc.remote_traceback,
        }
    except ExecutionAborted as exc:
        error = {"node_id": "", "kind": "aborted", "message": f"aborted: {exc.reason}", "traceback": ""}
    if as_json:
        if isinstance(value, tuple) and hasattr(value, "_asdict"):
            value = value._asdict()
        payload = {
            "execution_id": handle.execution_id,
            "status": details.status,
            "outputs": msgspec.to_builtins(value, enc_hook=str),
            "error": error,
        }
        _write(msgspec.json.encode(payload).decode())
        return 0 if error is None else 1
    from engine._cli_view import elapsed as elapsed_of
    from engine._cli_view import format_duration, outputs_renderable

    elapsed = f" in {format_duration(elapsed_of(details, _now()))}"
    if error is None:
        console = _console()
        console.print(
            f"execution {handle.execution_id} succeeded{elapsed}", style="green", markup=False, highlight=False
        )
        console.print("outputs:", style="bold", markup=False)
        console.print(outputs_renderable(value))
        return 0
    if error["kind"] == "aborted":
        _note(f"execution {handle.execution_id} was {error['message']}")
        return 1
    _note(
        f"execution {handle.execution_id} failed{elapsed} at node {error['node_id']!r} "
        f"({error['kind']} error): {error['message']}"
    )
    if error["traceback"]:
        _note("remote traceback:\n" + error["traceback"].rstrip())
    return 1


# -- small helpers ----------------------------------------------------------------------------------


def _scope(project: str | None, domain: str | None) -> dict[str, str]:
    """The engine scope of ``--project``/``--domain`` (or ``$SLIPSTREAM_PROJECT``/``$SLIPSTREAM_DOMAIN``),
    checked before anything is opened.

    Raises:
        InvalidScope: an empty or malformed project, or a domain not among ``$SLIPSTREAM_DOMAINS``
            (development, staging, production by default).
    """
    from engine._validation import DOMAINS, check_scope

    listed = [d.strip() for d in os.environ.get("SLIPSTREAM_DOMAINS", "").split(",") if d.strip()]
    domains = listed or list(DOMAINS)
    check_scope("default" if project is None else project, domains[0] if domain is None else domain, domains)
    return {name: value for name, value in (("project", project), ("domain", domain)) if value is not None}


def _statuses(status: str | None) -> list[str] | None:
    if status is None:
        return None
    wanted = [s.strip() for s in status.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in _STATUSES]
    if unknown or not wanted:
        raise BadInput(f"--status {status!r}: unknown status {unknown}; use one or more of {', '.join(_STATUSES)}")
    return wanted


def _run_async(body: Any, interrupted: str = "interrupted") -> int:
    """``asyncio.run(body())``; Ctrl-C exits with 130 after the note ``interrupted`` (none if "")."""
    try:
        return int(asyncio.run(body()))
    except KeyboardInterrupt:
        if interrupted:
            _note(interrupted)
        return 130


def _now() -> datetime:
    return datetime.now(UTC)


def _console() -> Any:
    import os

    from rich.console import Console

    # piped output is read by grep and people's scripts: do not wrap tables at 80 columns
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=200 if wide else None)


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _note(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _error(message: str) -> None:
    """One line on stderr, whatever the message's own line breaks."""
    _note("error: " + " ".join(line.strip() for line in message.splitlines() if line.strip()))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``slipstream`` console script; exits with the command's status."""
    sys.exit(_main(argv))


def _main(argv: list[str] | None) -> int:
    from engine.errors import ExecutionAborted, SlipstreamError, TaskFailed

    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="slipstream", standalone_mode=False)
    except typer.TyperException as exc:  # click usage errors: bad option, missing argument...
        if type(exc).__name__ == "NoArgsIsHelpError":
            _note(exc.format_message())
            return 2
        _error(exc.format_message())
        return getattr(exc, "exit_code", 2)
    except typer.Abort:
        _error("aborted")
        return 1
    except BadInput as exc:
        _error(str(exc))
        return 2
    except (TaskFailed, ExecutionAborted) as exc:  # the execution ended badly: exit 1, as `run` does
        _error(str(exc).split("\n\n", 1)[0])  # the remote traceback would not fit one line
        return 1
    except SlipstreamError as exc:  # bad input, settings, an unknown id, an unreachable store...
        _error(str(exc))
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    main()
