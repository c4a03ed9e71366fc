"""An example third-party Slipstream plugin: an executor (``inline``) and an agent (``countdown``).

It uses only the public plugin surface: the interfaces of ``engine.interfaces`` and the worker
runtime ``engine.runtime``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

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
from engine.runtime import resolve_request, run_attempt, run_attempt_async

__all__ = ["CountdownAgent", "InlineExecutor"]


class InlineExecutor(Executor):
    """Runs each attempt in this process: ``async def`` tasks on the event loop, sync ones in a
    thread of asyncio's default pool. Its work dies with the engine (handles are empty, so a
    restarted engine finds the attempts ``lost`` and retries them as system failures)."""

    def __init__(self, name: str = "inline") -> None:
        self.name = name
        self._report: Callable[[TaskKey], None] = lambda key: None
        self._blobs: BlobStore | None = None
        self._running: dict[TaskKey, asyncio.Task[None]] = {}
        self._done: dict[TaskKey, TaskStatus] = {}
        self.submitted: list[TaskKey] = []

    async def start(self, report: Callable[[TaskKey], None], *, blobs: BlobStore | None = None) -> None:
        self._report, self._blobs = report, blobs

    async def close(self) -> None:
        for key in list(self._running):
            await self.cancel(key)

    def starts_on_submit(self, request: TaskRequest) -> bool:
        return True  # the body starts in submit: the loop records the start before submitting

    async def submit(self, request: TaskRequest) -> str:
        if request.key not in self._running and request.key not in self._done:
            self.submitted.append(request.key)
            self._running[request.key] = asyncio.create_task(self._run(request))
        return ""

    async def _run(self, request: TaskRequest) -> None:
        if self._blobs is not None:
            request = await resolve_request(request, self._blobs)
        if request.task.is_async:
            status = await run_attempt_async(request, worker="inline")
        else:
            status = await asyncio.to_thread(run_attempt, request, worker="inline")
        self._running.pop(request.key, None)
        self._done[request.key] = status
        self._report(request.key)

    async def poll(self, key: TaskKey, handle: str = "") -> TaskStatus:
        if key in self._done:
            return self._done[key]
        return TaskStatus(phase="running", worker="inline") if key in self._running else TaskStatus(phase="lost")

    async def cancel(self, key: TaskKey, handle: str = "") -> None:
        running = self._running.pop(key, None)
        if running is not None:
            running.cancel()  # a sync body in a thread runs on; its result is dropped
            with contextlib.suppress(asyncio.CancelledError):
                await running
        self._done.pop(key, None)

    def forget(self, key: TaskKey) -> None:
        self._done.pop(key, None)


class CountdownAgent(Agent):
    """An agent whose jobs succeed after ``polls`` looks (setting ``polls``, default 3), with the
    job's input ``n`` doubled as their value. Jobs live in memory: a restart loses them."""

    name = "countdown"
    poll_interval = 0.01

    def __init__(self) -> None:
        self.jobs: dict[str, list[int]] = {}  # job id -> [polls left, value]

    async def create(self, job: AgentJob) -> str:
        job_id = f"{job.key.execution_id}/{job.key.node_id}/{job.key.attempt}"
        if job_id not in self.jobs:
            self.jobs[job_id] = [int(job.config.get("polls", 3)), 2 * int(job.inputs["n"])]
        return job_id

    async def get(self, job_id: str) -> AgentJobStatus:
        found = self.jobs.get(job_id)
        if found is None:
            return AgentJobStatus(phase="lost")
        found[0] -= 1
        return AgentJobStatus(phase="running") if found[0] > 0 else AgentJobStatus(phase="succeeded", value=found[1])

    async def delete(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
