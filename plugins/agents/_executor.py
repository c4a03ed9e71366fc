"""`AgentExecutor`: the ``agents`` executor, which runs attempts as jobs of agents (DESIGN section 7).

A task declared with ``@agent(name, ...)`` and ``@task(executor="agents")`` becomes, per attempt, one
job that the agent creates somewhere else. The executor holds no worker for it: one asyncio task
polls every job in flight with the agent's ``get`` and reports those that changed, so the control
loop sees an executor like any other.

Durability: an attempt's handle (recorded in ``NodeRunning``) names the agent, the job id and the
task, so a restarted engine polls, or deletes, the job it left running instead of creating a second
one. ``close`` therefore leaves jobs running; the attempts they belong to are finished by whichever
engine opens the store next. A crash between the agent's ``create`` and the recorded start submits
the attempt again, and ``create``, idempotent per attempt, returns the same job.

A ``map_task`` over an agent task runs one job per element: a chunk of elements is a set of jobs,
created together and reported together (one `ElementResult` each) when the last one ends. A
``@dynamic`` cannot run on an agent: it is refused with a `ConfigError` that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Any

import msgspec

from engine.errors import ConfigError, SlipstreamError
from engine.events import ElementResult
from engine.interfaces import (
    Agent,
    AgentJob,
    AgentJobStatus,
    BlobStore,
    Executor,
    TaskKey,
    TaskRequest,
    TaskStatus,
)
from engine.models import ErrorInfo, TaskRef
from engine.runtime import can_load, decode_inputs, encode_outputs, load_task, read_secrets, resolve_request
from plugins.agents._declare import declaration_of

__all__ = ["AGENT_GROUP", "AgentExecutor"]

AGENT_GROUP = "slipstream.agents"

log = logging.getLogger("slipstream.executor.agents")


class _Handle(msgspec.Struct, frozen=True, array_like=True):
    """What ``NodeRunning.handle`` holds: enough to find the job (or a chunk's jobs, as ``(index,
    attempt, job id)``), and to type its outputs, after a restart (the executor is not given the spec
    then)."""

    agent: str
    job: str
    task: TaskRef
    elements: list[tuple[int, int, str]] = []


_HANDLE_ENCODER = msgspec.json.Encoder()
_HANDLE_DECODER = msgspec.json.Decoder(_Handle)


@dataclass(slots=True)
class _Element:
    """One element's job in a chunk, and its result once it ended."""

    index: int
    attempt: int
    job_id: str
    result: ElementResult | None = None


@dataclass(slots=True)
class _Job:
    key: TaskKey
    agent: Agent
    job_id: str  # "" for a chunk, whose jobs are its elements'
    task: Any  # engine.Task (plugins may not import the SDK's class)
    handle: str
    status: TaskStatus
    elements: list[_Element] = field(default_factory=list)
    next_poll: float = 0.0
    quiet_polls: int = 0  # polls in a row that found it still running

    def job_ids(self) -> list[str]:
        return [element.job_id for element in self.elements] if self.elements else [self.job_id]


class AgentExecutor(Executor):
    """Runs attempts as jobs of agents, polled from the event loop.

    Args:
        agents: the agents to use (instances); agents not given are found by name in the
            entry-point group ``slipstream.agents`` when a task first asks for them, and built with
            no arguments.
        poll_interval: seconds between two ``get`` of a job that just started; None uses each
            agent's own ``poll_interval``. A job found running again and again is asked less and
            less often (the interval grows by half each time), up to ``backoff`` times the interval,
            so that many long jobs (sensors waiting for hours) cost the loop little.
        backoff: how far the interval may grow, as a multiple of ``poll_interval`` (1: never).
        name: the executor's name, which tasks give in ``executor=``.

    Raises:
        ConfigError: two agents with one name, a poll interval that is not positive, or a backoff
            below 1.
    """

    gates_start = False

    def __init__(
        self,
        agents: Sequence[Agent] | Mapping[str, Agent] = (),
        *,
        poll_interval: float | None = None,
        backoff: float = 10.0,
        name: str = "agents",
    ) -> None:
        if poll_interval is not None and not poll_interval > 0:
            raise ConfigError(f"AgentExecutor poll_interval must be positive seconds, got {poll_interval!r}")
        if not backoff >= 1:
            raise ConfigError(f"AgentExecutor backoff must be a multiple >= 1 of the poll interval, got {backoff!r}")
        self._backoff = float(backoff)
        self.name = name
        self._given: dict[str, Agent] = {}
        for found_name, found in agents.items() if isinstance(agents, Mapping) else ((a.name, a) for a in agents):
            if not found_name or found_name in self._given:
                raise ConfigError(
                    f"agents need distinct, non-empty names (Agent.name); got {found_name!r} twice or empty"
                )
            self._given[found_name] = found
        self._poll_interval = poll_interval
        self._agents: dict[str, Agent] = {}  # started ones
        self._jobs: dict[TaskKey, _Job] = {}
        self._report: Callable[[TaskKey], None] = _ignore
        self._blobs: BlobStore | None = None
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()  # two first submits for one agent build and start it once

    # -- Executor ----------------------------------------------------------------------------------

    async def start(self, report: Callable[[TaskKey], None], *, blobs: BlobStore | None = None) -> None:
        self._report = report
        self._blobs = blobs
        self._wake = asyncio.Event()  # made on the loop that runs the engine
        self._starting = asyncio.Lock()
        self._poller = asyncio.create_task(self._poll_forever(), name=f"slipstream-agents:{self.name}")

    async def close(self) -> None:
        """Stop polling and close the agents; jobs keep running (a restarted engine resumes them)."""
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        self._jobs.clear()
        agents, self._agents = self._agents, {}
        for started in agents.values():
            try:
                await started.close()
            except Exception:
                log.warning("closing agent %r failed", started.name, exc_info=True)

    async def submit(self, request: TaskRequest) -> str:
        """Create the attempt's job on its agent (a chunk: one job per element), once per key;
        return the attempt's handle.

        Raises:
            ConfigError: the task has no ``@agent`` declaration, its agent is not installed, it is a
                ``@dynamic``, its settings are wrong, or a declared secret is not set.
        """
        known = self._jobs.get(request.key)
        if known is not None:
            return known.handle
        what = f"task {request.task.name!r}"
        if request.kind == "dynamic":
            raise ConfigError(f"{what} is a @dynamic, which cannot run on an agent: run it on executor='local'")
        task = load_task(request.task)
        declaration = declaration_of(task.fn)
        if declaration is None:
            raise ConfigError(
                f"{what} was sent to the agents executor but declares no agent: decorate its function with "
                "@agent('<name>', ...) from plugins.agents, or give it another executor="
            )
        found = await self._agent(declaration.name, what)
        if self._blobs is not None:
            request = await resolve_request(request, self._blobs)
        secrets = read_secrets(request.secrets)
        missing = [name for name in request.secrets if name not in secrets]
        if missing:
            raise ConfigError(
                f"{what} declares secrets {missing} that are not set in the engine's environment: export them "
                "(e.g. `export NAME=...`), or remove them from the task's secrets=[...]"
            )
        jobs = [
            AgentJob(
                key=key,
                task=request.task.name,
                config=dict(declaration.config),
                inputs=decode_inputs(task, literals),
                secrets=secrets,
                timeout=request.timeout,
                project=request.project,
                domain=request.domain,
            )
            for key, literals in _attempts(request)
        ]
        job_ids = await _create_all(found, jobs)
        worker = f"agent:{declaration.name}"
        started = datetime.now(UTC)
        if request.elements:
            elements = [
                _Element(index, attempt, job_id)
                for index, attempt, job_id in zip(request.elements, request.element_attempts, job_ids, strict=True)
            ]
            described = _Handle(declaration.name, "", request.task, [(e.index, e.attempt, e.job_id) for e in elements])
            handle = _HANDLE_ENCODER.encode(described).decode()
            status = TaskStatus(phase="running", worker=worker, handle=handle, started_at=started)
            self._track(_Job(request.key, found, "", task, handle, status, elements))
        else:
            handle = _HANDLE_ENCODER.encode(_Handle(declaration.name, job_ids[0], request.task)).decode()
            status = TaskStatus(phase="running", worker=worker, handle=handle, started_at=started)
            self._track(_Job(request.key, found, job_ids[0], task, handle, status))
        self._report(request.key)  # the start: the loop records NodeRunning with the handle
        return handle

    async def poll(self, key: TaskKey, handle: str = "") -> TaskStatus:
        """The attempt's status; a restarted engine's first poll adopts the job by its handle."""
        known = self._jobs.get(key)
        if known is not None:
            return known.status
        if not handle:
            return TaskStatus(phase="lost")
        try:
            job = await self._adopt(key, handle)
        except SlipstreamError as exc:
            error = ErrorInfo(kind="user", message=str(exc), retryable=False)
            return TaskStatus(phase="failed", error=error, handle=handle)
        if job is None:
            return TaskStatus(phase="lost")
        await self._refresh(job)
        return job.status

    async def cancel(self, key: TaskKey, handle: str = "") -> None:
        """Delete the attempt's job (stopping it); unknown attempts are ignored."""
        job = self._jobs.pop(key, None)
        if job is not None:
            await _delete_all(job.agent, job.job_ids())
            return
        parsed = _parse(handle)
        if parsed is not None:
            found = await self._agent(parsed.agent, f"task {parsed.task.name!r}")
            await _delete_all(found, [job_id for _, _, job_id in parsed.elements] or [parsed.job])

    def forget(self, key: TaskKey) -> None:
        self._jobs.pop(key, None)

    def can_run(self, task: TaskRef) -> bool:
        return can_load(task)

    # -- jobs --------------------------------------------------------------------------------------

    async def _agent(self, name: str, what: str) -> Agent:
        started = self._agents.get(name)
        if started is not None:
            return started
        async with self._starting:
            return self._agents.get(name) or await self._start_agent(name, what)

    async def _start_agent(self, name: str, what: str) -> Agent:
        chosen = self._given.get(name)
        if chosen is None:
            installed = {ep.name: ep for ep in entry_points(group=AGENT_GROUP)}
            if name not in installed:
                raise ConfigError(
                    f"{what} runs on agent {name!r}, which is not installed; installed agents: "
                    f"{sorted({*installed, *self._given})}. Install the package that provides it (an entry point "
                    f"{name!r} in group {AGENT_GROUP!r}), or pass it to AgentExecutor(agents=[...])"
                )
            chosen = installed[name].load()()
        await chosen.start()
        self._agents[name] = chosen
        return chosen

    async def _adopt(self, key: TaskKey, handle: str) -> _Job | None:
        parsed = _parse(handle)
        if parsed is None:
            return None
        found = await self._agent(parsed.agent, f"task {parsed.task.name!r}")
        task = load_task(parsed.task)
        status = TaskStatus(phase="running", worker=f"agent:{parsed.agent}", handle=handle)
        elements = [_Element(index, attempt, job_id) for index, attempt, job_id in parsed.elements]
        job = _Job(key, found, parsed.job, task, handle, status, elements)
        self._track(job)
        return job

    def _track(self, job: _Job) -> None:
        job.next_poll = time.monotonic() + self._interval(job)
        self._jobs[job.key] = job
        self._wake.set()

    def _interval(self, job: _Job) -> float:
        base = self._poll_interval if self._poll_interval is not None else max(job.agent.poll_interval, 0.01)
        return base * min(1.5**job.quiet_polls, self._backoff)

    async def _refresh(self, job: _Job) -> bool:
        """Ask the agent about the job; whether its status changed."""
        job.next_poll = time.monotonic() + self._interval(job)
        job.quiet_polls += 1
        if job.elements:
            return await self._refresh_chunk(job)
        answer = await _get(job.agent, job.job_id)
        if answer is None or self._jobs.get(job.key) is not job or answer.phase == "running":
            return False
        job.status = _status(job, answer, job.job_id)
        return True

    async def _refresh_chunk(self, job: _Job) -> bool:
        pending = [element for element in job.elements if element.result is None]
        answers = await asyncio.gather(*(_get(job.agent, element.job_id) for element in pending))
        if self._jobs.get(job.key) is not job:
            return False
        for element, answer in zip(pending, answers, strict=True):
            if answer is not None and answer.phase != "running":
                element.result = _element_result(job, element, answer)
                job.quiet_polls = 0  # its elements are ending: ask often again
        if any(element.result is None for element in job.elements):
            return False
        results = [element.result for element in job.elements if element.result is not None]
        job.status = msgspec.structs.replace(job.status, phase="succeeded", elements=results)
        return True

    async def _refresh_quietly(self, job: _Job) -> bool:
        try:
            return await self._refresh(job)
        except Exception:
            # a bug in an agent must not stop the polling of every other job
            log.exception("agent %r: polling the job(s) of attempt %s failed", job.agent.name, job.key)
            return False

    async def _poll_forever(self) -> None:
        while True:
            now = time.monotonic()
            due = [job for job in self._jobs.values() if job.status.phase == "running" and job.next_poll <= now]
            # concurrently: an agent across a network answers in round trips, not microseconds
            changed = await asyncio.gather(*(self._refresh_quietly(job) for job in due))
            for job, moved in zip(due, changed, strict=True):
                if moved:
                    self._report(job.key)
            waiting = [job.next_poll for job in self._jobs.values() if job.status.phase == "running"]
            self._wake.clear()
            if waiting:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(min(waiting) - time.monotonic(), 0.0))
            else:
                await self._wake.wait()


def _attempts(request: TaskRequest) -> list[tuple[TaskKey, dict[str, bytes]]]:
    """The attempts a request asks for, with their input literals: itself, or a chunk's elements
    (node ``<map>/<index>``, as `engine.runtime` runs them)."""
    if not request.elements:
        return [(request.key, request.inputs)]
    array_id = request.key.node_id.rpartition("/")[0]
    attempts = []
    for position, (index, attempt) in enumerate(zip(request.elements, request.element_attempts, strict=True)):
        literals = dict(request.inputs)
        for name, values in request.mapped.items():
            literals[name] = values[position]
        attempts.append((TaskKey(request.key.execution_id, f"{array_id}/{index}", attempt), literals))
    return attempts


async def _create_all(agent: Agent, jobs: list[AgentJob]) -> list[str]:
    """Create every job, or none: if one create fails, delete those that were made, then raise."""
    if len(jobs) == 1:
        return [await agent.create(jobs[0])]
    made = await asyncio.gather(*(agent.create(job) for job in jobs), return_exceptions=True)
    failures = [outcome for outcome in made if isinstance(outcome, BaseException)]
    if failures:
        await _delete_all(agent, [outcome for outcome in made if isinstance(outcome, str)])
        raise failures[0]
    return [outcome for outcome in made if isinstance(outcome, str)]


async def _delete_all(agent: Agent, job_ids: list[str]) -> None:
    if len(job_ids) == 1:
        await agent.delete(job_ids[0])
    else:
        await asyncio.gather(*(agent.delete(job_id) for job_id in job_ids))


async def _get(agent: Agent, job_id: str) -> AgentJobStatus | None:
    """The job's status, or None when the agent cannot tell now (asked again at the next tick)."""
    try:
        return await agent.get(job_id)
    except Exception as exc:
        log.warning("agent %r: get(%r) failed (%s: %s)", agent.name, job_id, type(exc).__name__, exc)
        return None


def _element_result(job: _Job, element: _Element, answer: AgentJobStatus) -> ElementResult:
    status = _status(job, answer, element.job_id)
    if status.phase == "succeeded":
        return ElementResult(element.index, element.attempt, status.outputs.get("o0"))
    if status.phase == "lost":
        message = answer.message or f"agent {job.agent.name!r} lost job {element.job_id!r}"
        return ElementResult(element.index, element.attempt, error=ErrorInfo(kind="system", message=message))
    return ElementResult(element.index, element.attempt, error=status.error)


def _status(job: _Job, answer: AgentJobStatus, job_id: str) -> TaskStatus:
    base = job.status
    match answer.phase:
        case "succeeded":
            value = answer.value if job.task.interface.outputs else None
            try:
                outputs = encode_outputs(job.task, value)
            except SlipstreamError as exc:
                error = ErrorInfo(kind="user", message=f"agent job {job_id!r}: {exc}", retryable=False)
                return msgspec.structs.replace(base, phase="failed", error=error)
            return msgspec.structs.replace(base, phase="succeeded", outputs=outputs)
        case "failed":
            error = ErrorInfo(kind="user", message=answer.message or "the job failed", retryable=answer.retryable)
            return msgspec.structs.replace(base, phase="failed", error=error)
        case "lost":
            return TaskStatus(phase="lost", handle=base.handle)
        case _:
            message = f"agent {job.agent.name!r} reported an unknown phase {answer.phase!r} for job {job_id!r}"
            return msgspec.structs.replace(base, phase="failed", error=ErrorInfo(kind="system", message=message))


def _parse(handle: str) -> _Handle | None:
    if not handle:
        return None
    try:
        return _HANDLE_DECODER.decode(handle)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _ignore(key: TaskKey) -> None:
    return None
