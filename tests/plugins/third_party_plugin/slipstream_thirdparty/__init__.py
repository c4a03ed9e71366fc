"""An example third-party Slipstream plugin: an executor (``inline``), an agent (``countdown``), an
event store (``scratch``), a blob store (``scratch``, for ``scratch://`` locations) and an event
sink (``jsonl``).

It uses only the public plugin surface: the interfaces of ``engine.interfaces`` and the worker
runtime ``engine.runtime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from engine.errors import BlobNotFound
from engine.interfaces import (
    Agent,
    AgentJob,
    AgentJobStatus,
    BlobStore,
    EventStore,
    Executor,
    Service,
    ServiceContext,
    ServiceHealth,
    TaskKey,
    TaskRequest,
    TaskStatus,
)
from engine.runtime import resolve_request, run_attempt, run_attempt_async
from engine.testing import InMemoryEventStore

__all__ = ["CountdownAgent", "InlineExecutor", "JsonLinesSink", "ScratchBlobStore", "ScratchEventStore"]


class InlineExecutor(Executor):
    """Runs each attempt in this process: ``async def`` tasks on the event loop, sync ones in a
    thread of asyncio's default pool. Its work dies with the engine (handles are empty, so a
    restarted engine finds the attempts ``lost`` and retries them as system failures)."""

    def __init__(self, name: str = "inline") -> None:
        self.name = name
        self._report: Callable[[TaskKey], None] = lambda key: None
        self._blobs: BlobStore | None = None
        self._running: dict[TaskKey, tuple[asyncio.Task[None], datetime]] = {}
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
            started = datetime.now(UTC)
            self._running[request.key] = asyncio.create_task(self._run(request, started)), started
        return ""

    async def _run(self, request: TaskRequest, started: datetime) -> None:
        if self._blobs is not None:
            request = await resolve_request(request, self._blobs)
        if request.task.is_async:
            status = await run_attempt_async(request, worker="inline", started_at=started)
        else:
            status = await asyncio.to_thread(run_attempt, request, worker="inline", started_at=started)
        self._running.pop(request.key, None)
        self._done[request.key] = status
        self._report(request.key)

    async def poll(self, key: TaskKey, handle: str = "") -> TaskStatus:
        if key in self._done:
            return self._done[key]
        if key in self._running:
            return TaskStatus(phase="running", worker="inline", started_at=self._running[key][1])
        return TaskStatus(phase="lost")

    async def cancel(self, key: TaskKey, handle: str = "") -> None:
        running = self._running.pop(key, None)
        if running is not None:
            running[0].cancel()  # a sync body in a thread runs on; its result is dropped
            with contextlib.suppress(asyncio.CancelledError):
                await running[0]
        self._done.pop(key, None)

    def forget(self, key: TaskKey) -> None:
        self._done.pop(key, None)


class CountdownAgent(Agent):
    """An agent whose jobs end ``seconds`` after they were created (setting ``seconds``, default 1),
    with their input ``n`` doubled as their value.

    A job is a file under ``directory`` named by its id, holding its deadline and value, so another
    instance over the same directory (a restarted engine) finds it by id.
    """

    name = "countdown"
    poll_interval = 0.05

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        state = Path(os.environ.get("SLIPSTREAM_STATE_DIR") or Path.home() / ".slipstream")
        self.directory = Path(directory) if directory is not None else state / "agents" / "countdown"

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    async def create(self, job: AgentJob) -> str:
        key = f"{job.key.execution_id}:{job.key.node_id}:{job.key.attempt}"
        job_id = hashlib.sha256(key.encode()).hexdigest()[:32]  # the same id for the same attempt
        deadline = time.time() + float(job.config.get("seconds", 1.0))
        record = json.dumps({"deadline": deadline, "value": 2 * int(job.inputs["n"])})
        await asyncio.to_thread(_create_once, self.directory / job_id, record)
        return job_id

    async def get(self, job_id: str) -> AgentJobStatus:
        found = await asyncio.to_thread(_read_job, self.directory / job_id)
        if found is None:  # unknown (or not an id of ours): lost
            return AgentJobStatus(phase="lost", message=f"no countdown job {job_id!r}")
        if time.time() < found["deadline"]:
            return AgentJobStatus(phase="running")
        return AgentJobStatus(phase="succeeded", value=found["value"])

    async def delete(self, job_id: str) -> None:
        if job_id.isalnum():
            (self.directory / job_id).unlink(missing_ok=True)


def _create_once(path: Path, text: str) -> None:
    with contextlib.suppress(FileExistsError), path.open("x") as file:  # "x": a second create keeps the first
        file.write(text)


def _read_job(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class ScratchEventStore(InMemoryEventStore):
    """An event log in memory, for demos: it lasts as long as the process. ``location`` (the path
    or DSN the engine builds stores with) only names it."""

    def __init__(self, location: object) -> None:
        super().__init__()
        self.name = f"scratch:{location}"


class ScratchBlobStore(BlobStore):
    """Blobs in a dict, for ``scratch://<name>`` locations; they last as long as the process."""

    def __init__(self, url: str) -> None:
        self.name = url
        self.blobs: dict[str, bytes] = {}

    async def put(self, data: bytes | bytearray | memoryview) -> str:
        data = bytes(data)
        address = "sha256/" + hashlib.sha256(data).hexdigest()
        self.blobs.setdefault(address, data)
        return address

    async def put_stream(self, chunks: AsyncIterable[bytes] | Iterable[bytes]) -> str:
        parts = [chunk async for chunk in chunks] if isinstance(chunks, AsyncIterable) else list(chunks)
        return await self.put(b"".join(parts))

    async def _get(self, address: str) -> bytes:
        if address not in self.blobs:
            raise BlobNotFound(address, self.name)
        return self.blobs[address]

    async def _open(self, address: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        data = await self._get(address)
        for offset in range(0, len(data), chunk_size):
            yield data[offset : offset + chunk_size]

    async def _read_range(self, address: str, offset: int, length: int) -> bytes:
        return (await self._get(address))[offset : offset + length]

    async def _exists(self, address: str) -> bool:
        return address in self.blobs

    async def _size(self, address: str) -> int:
        return len(await self._get(address))

    async def _delete(self, address: str) -> bool:
        return self.blobs.pop(address, None) is not None


class JsonLinesSink(Service):
    """Appends every committed event to a file as one JSON line, in commit order, from a durable
    cursor: after a restart it goes on where it stopped (at least once: the last events before a
    crash may be written again)."""

    name = "jsonl"

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._store: EventStore | None = None
        self._cursor = f"sink:jsonl:{self.path}"
        self._error = ""

    async def start(self, context: ServiceContext) -> None:
        self._store = context.store
        self.path.parent.mkdir(parents=True, exist_ok=True)

    async def run(self) -> None:
        assert self._store is not None, "start() first"
        store = self._store
        while True:
            try:
                position = await store.read_cursor(self._cursor)
                page = await store.read_all(position, limit=500)
                if page:
                    with self.path.open("ab") as file:
                        for item in page:
                            file.write(msgspec.json.encode(item.event) + b"\n")
                    await store.write_cursor(self._cursor, page[-1].seq)
                    self._error = ""
                    continue
            except Exception as exc:  # the store is away: say so, wait, try again
                self._error = f"{type(exc).__name__}: {exc}"
            await store.wait_for_changes(timeout=1.0)

    async def stop(self) -> None:
        self._store = None

    def health(self) -> ServiceHealth:
        return ServiceHealth(ok=not self._error, detail=self._error)
