"""The Ray actor that runs attempts: one warm worker process holding its resources (GPUs included).

An actor runs one attempt at a time (the executor's pool only hands it work when it is idle) and
keeps the status of its recent attempts, so that an engine that restarted finds an attempt by its
handle (the actor's name) and either reads its result or waits for it. It is an async actor: its
event loop stays free to answer ``status``, ``wait`` and ``cancel`` while a sync body runs in its
thread, and an ``async def`` body runs on that loop where ``cancel`` really cancels it.

This module imports Ray and is loaded only by the executor's ``start`` and in the actor processes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import os
import socket
import sys
import time
from datetime import UTC, datetime

import msgspec
import ray

from engine.interfaces import TaskKey, TaskRequest, TaskStatus
from engine.runtime import load_blobs, run_attempt, run_attempt_async

__all__ = ["ActorInfo", "Job", "SlipstreamActor"]

# how many finished attempts an actor remembers for engines that poll it after a restart
KEPT_RESULTS = 256
# how long a cancelled async body may take to unwind (the engine kills the actor after that)
CANCEL_GRACE_SECONDS = 5.0


class Job(msgspec.Struct, frozen=True):
    """One attempt as sent to an actor (msgpack): the request and its secrets' values, read in
    the engine's process (the actor's environment is not the engine's)."""

    request: TaskRequest
    secrets: dict[str, str]
    blobs: bytes | None = None  # the engine's blob store, pickled (`engine.runtime.portable_blobs`)


class ActorInfo(msgspec.Struct, frozen=True):
    """What an actor tells about itself once it is up."""

    name: str
    pid: int
    node: str
    gpu_ids: list[str]


class SlipstreamActor:
    """Runs attempts sent by a `RayExecutor` (wrapped with ``ray.remote`` by the executor).

    Args:
        name: the actor's name in its namespace (part of every handle).
        sys_path: the engine's ``sys.path``: entries missing here are added, so that task modules
            the engine imports by path import here too (on one machine; a cluster needs them
            installed or shipped with a Ray runtime environment).
        orphan_timeout: seconds without any call after which an idle actor exits by itself: an
            engine that died cannot kill its actors, and a detached actor would hold its GPU forever.
    """

    def __init__(self, name: str, sys_path: list[str], orphan_timeout: float) -> None:
        for entry in sys_path:
            if entry not in sys.path:
                sys.path.append(entry)
        self._name = name
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="slipstream-ray")
        self._running: dict[TaskKey, asyncio.Future[TaskStatus]] = {}
        self._done: collections.OrderedDict[TaskKey, bytes] = collections.OrderedDict()
        self._last_call = time.monotonic()
        self._orphan_timeout = orphan_timeout
        self._watch: asyncio.Task[None] | None = None
        gpu_ids = [str(gpu) for gpu in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]
        self._info = ActorInfo(name=name, pid=os.getpid(), node=socket.gethostname(), gpu_ids=gpu_ids)

    def _touch(self) -> None:
        self._last_call = time.monotonic()
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._exit_when_orphaned())

    async def info(self) -> bytes:
        """The actor's `ActorInfo` (msgpack); answering it means the actor is up."""
        self._touch()
        return msgspec.msgpack.encode(self._info)

    async def run(self, job: bytes) -> bytes:
        """Run one attempt (a `Job`, msgpack) to its end; return its final `TaskStatus` (msgpack).

        Raises:
            asyncio.CancelledError: the attempt was cancelled (``cancel``).
        """
        self._touch()
        decoded = msgspec.msgpack.decode(job, type=Job)
        request = decoded.request
        started_at = datetime.now(UTC)
        worker = f"ray:{self._name}[pid {self._info.pid} on {self._info.node}]"
        kwargs = {
            "worker": worker,
            "gpu_ids": self._info.gpu_ids,
            "environ": decoded.secrets,
            "started_at": started_at,
            "blobs": load_blobs(decoded.blobs),
        }
        if request.kind == "task" and request.task.is_async:
            body: asyncio.Future[TaskStatus] = asyncio.ensure_future(run_attempt_async(request, **kwargs))
        else:
            loop = asyncio.get_running_loop()
            body = loop.run_in_executor(self._thread, lambda: run_attempt(request, **kwargs))
        self._running[request.key] = body
        try:
            status = await body
        finally:
            self._running.pop(request.key, None)
            self._touch()
        encoded = msgspec.msgpack.encode(status)
        self._done[request.key] = encoded
        while len(self._done) > KEPT_RESULTS:
            self._done.popitem(last=False)
        return encoded

    async def status(self, key: bytes) -> bytes | None:
        """The attempt's status here: its final one (msgpack), ``b"running"``, or None if unknown."""
        self._touch()
        decoded = msgspec.msgpack.decode(key, type=TaskKey)
        if decoded in self._running:
            return b"running"
        return self._done.get(decoded)

    async def wait(self, key: bytes) -> bytes | None:
        """Wait for a running attempt's end; its final status (msgpack), or None if unknown."""
        decoded = msgspec.msgpack.decode(key, type=TaskKey)
        body = self._running.get(decoded)
        if body is not None:
            # shielded: a waiter that goes away (an engine cancelling its poll) must not cancel the body
            await asyncio.shield(asyncio.wait([body]))
        return self._done.get(decoded)

    async def cancel(self, key: bytes) -> str:
        """Cancel the attempt: ``"cancelled"`` (an async body, cancelled), ``"unknown"``, ``"stuck"``
        (an async body still running after the grace), or ``"thread"`` (a sync body: Python cannot
        stop its thread). For the last two the caller kills this actor."""
        self._touch()
        decoded = msgspec.msgpack.decode(key, type=TaskKey)
        self._done.pop(decoded, None)
        body = self._running.get(decoded)
        if body is None:
            return "unknown"
        if isinstance(body, asyncio.Task):
            body.cancel()
            await asyncio.wait([body], timeout=CANCEL_GRACE_SECONDS)
            return "cancelled" if body.done() else "stuck"
        return "thread"

    async def _exit_when_orphaned(self) -> None:
        while True:
            idle = time.monotonic() - self._last_call
            if idle >= self._orphan_timeout and not self._running:
                ray.actor.exit_actor()
            await asyncio.sleep(max(1.0, self._orphan_timeout - idle))
