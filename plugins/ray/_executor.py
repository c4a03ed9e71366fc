"""`RayExecutor`: runs attempts on pools of warm Ray actors (DESIGN section 7, ``ray``).

Pools are keyed by resource shape (`Shape`: CPUs, GPUs including fractions, memory). A pool
starts an actor when an attempt waits and no actor of its shape is idle, as long as the cluster
has room for one more (counted from ``ray.cluster_resources()`` against what this executor's
actors reserve; idle actors of other shapes are stopped to make room), and stops an actor that
stayed idle for ``idle_timeout`` seconds (``gpu_idle_timeout`` for GPU actors, which keep their
GPU warm across executions and workflows in between). An attempt is one actor method call, a map
chunk too; each actor runs one attempt at a time.

The event loop never waits on Ray: calls return `ObjectRef`s that are awaited, and the calls that
block (``ray.init``, finding named actors) run in a thread. Inputs travel as one msgpack argument,
which Ray puts in its object store when it is large; blob references in inputs are resolved here
first, once per attempt, and outputs above the engine's inline limit are offloaded by the loop.

Every attempt's handle is ``ray:<namespace>/<executor id>``; its actors are named
``<executor id>-<n>`` (detached: they outlive a crashed engine), and each remembers its recent
attempts by key. A restarted engine polling or cancelling with that handle asks those actors:
one still running the attempt is waited on, one that finished it gives its result, none knowing
it means ``lost``. An actor whose engine is gone exits once idle for ``orphan_timeout``: the
engine calls each of its actors every third of that while it lives.

Failures: an actor that dies (killed, out of memory, its node lost) fails its attempt as a
retryable system error; the next attempt gets a fresh actor. Cancel: an ``async def`` body is
cancelled inside its actor; a sync body's actor is killed (Python cannot stop a thread) and
replaced on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from engine.errors import ConfigError
from engine.interfaces import BlobStore, Executor, TaskKey, TaskRequest, TaskStatus
from engine.models import ErrorInfo, TaskRef
from engine.runtime import can_load, portable_blobs, portable_ref, read_secrets, resolve_request
from plugins.ray._elsewhere import HANDLE_PREFIX, Elsewhere, cancel_on, key_bytes
from plugins.ray._shape import Capacity, Shape, shape_of

__all__ = ["RayExecutor", "ray_available"]

log = logging.getLogger("slipstream.executor.ray")

# how long a cancelled async body may take to unwind before its actor is killed anyway
CANCEL_GRACE_SECONDS = 5.0
# how often the cluster's resources are read again
_RESIZE_INTERVAL = 30.0


def ray_available() -> bool:
    """Whether Ray can be imported here (without importing it)."""
    if "ray" in sys.modules:
        return sys.modules["ray"] is not None
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


@dataclass(eq=False)
class _Actor:
    """One warm actor of a pool."""

    name: str
    shape: Shape
    handle: Any  # ray.actor.ActorHandle
    pid: int = 0
    node: str = ""
    gpu_ids: list[str] = field(default_factory=list)
    ready: bool = False
    attempt: _Attempt | None = None
    idle_since: float = 0.0


@dataclass(eq=False)
class _Attempt:
    """One submitted (or adopted) attempt, on the event-loop thread only."""

    key: TaskKey
    shape: Shape
    job: bytes
    is_async: bool
    phase: Literal["queued", "running"] = "queued"
    actor: _Actor | None = None
    worker: str = ""
    gpu_ids: list[str] = field(default_factory=list)
    started_at: datetime | None = None
    final: TaskStatus | None = None
    driver: asyncio.Task[None] | None = None
    remote: Any = None  # the actor of another executor, for an adopted attempt


@dataclass(eq=False)
class _Pool:
    shape: Shape
    actors: list[_Actor] = field(default_factory=list)
    waiting: deque[_Attempt] = field(default_factory=deque)

    def idle(self) -> list[_Actor]:
        return [actor for actor in self.actors if actor.ready and actor.attempt is None]

    def starting(self) -> int:
        return sum(1 for actor in self.actors if not actor.ready)


class RayExecutor(Executor):
    """Runs attempts as method calls on warm Ray actors, pooled by resource shape.

    Args:
        address: the Ray cluster (``"auto"``, ``"ray://head:10001"``); default
            ``$SLIPSTREAM_RAY_ADDRESS``, else a local Ray started by `start` (or the Ray this
            process already initialised, which is reused as it is).
        namespace: the Ray namespace of the actors.
        idle_timeout: seconds an idle CPU actor is kept before it is stopped.
        gpu_idle_timeout: the same for actors that hold GPUs (kept longer: their start is the
            cold start GPU work wants to avoid).
        max_actors: the most actors of one shape at once; default: as many as the cluster fits
            (and, for shapes that reserve nothing, the cluster's CPU count).
        orphan_timeout: seconds an idle actor waits without hearing from its engine before it
            exits (60): a crashed engine cannot stop its detached actors, and they would hold their
            GPUs forever. A live engine calls its actors every third of it.
        init_options: keyword arguments for ``ray.init`` when `start` starts Ray (e.g.
            ``{"num_cpus": 4}``).

    Raises:
        ConfigError: Ray is not installed (the message names the extra and ``executor="local"``).
        ValueError: an argument is out of range.
    """

    name = "ray"
    gates_start = False  # bodies run in actor processes: one that dies takes down only its actor

    def __init__(
        self,
        address: str | None = None,
        *,
        namespace: str = "slipstream",
        idle_timeout: float = 60.0,
        gpu_idle_timeout: float = 600.0,
        max_actors: int | None = None,
        orphan_timeout: float | None = None,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        if not ray_available():
            raise ConfigError(
                "executor 'ray' needs Ray, which is not installed: pip install 'slipstream[ray]', or run tasks "
                "in this process with executor='local' (Engine.connect(..., executor='local'))"
            )
        timeouts = {"idle_timeout": idle_timeout, "gpu_idle_timeout": gpu_idle_timeout}
        if orphan_timeout is not None:
            timeouts["orphan_timeout"] = orphan_timeout
        for what, value in timeouts.items():
            if value <= 0:
                raise ValueError(f"RayExecutor({what}={value}): give a positive number of seconds")
        if max_actors is not None and max_actors < 1:
            raise ValueError(f"RayExecutor(max_actors={max_actors}): need at least one actor per shape")
        self.address = address or os.environ.get("SLIPSTREAM_RAY_ADDRESS") or None
        self.namespace = namespace
        self.idle_timeout = idle_timeout
        self.gpu_idle_timeout = gpu_idle_timeout
        self.max_actors = max_actors
        self.orphan_timeout = orphan_timeout or 60.0
        self.init_options = dict(init_options or {})
        self.executor_id = uuid.uuid4().hex[:12]
        self._handle = f"{HANDLE_PREFIX}{namespace}/{self.executor_id}"
        self._attempts: dict[TaskKey, _Attempt] = {}
        self._pools: dict[Shape, _Pool] = {}
        self._capacity: Capacity | None = None
        self._report: Callable[[TaskKey], None] = lambda key: None
        self._blobs: BlobStore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._actor_class: Any = None
        self._spawned = 0
        self._owns_ray = False
        self._closing = False
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # actor starts and adoptions in progress
        self._elsewhere = Elsewhere()  # attempts of this engine before a restart

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, report: Callable[[TaskKey], None], *, blobs: BlobStore | None = None) -> None:
        """Connect to Ray (start it locally, or reuse this process's), read the cluster's size.

        Args:
            report: called on the event-loop thread when an attempt starts and when it ends.
            blobs: where values referenced from inputs are read before an attempt is sent.

        Raises:
            ConfigError: the cluster at ``address`` cannot be reached.
        """
        import ray

        from plugins.ray._actor import SlipstreamActor

        self._loop = asyncio.get_running_loop()
        self._report = report
        self._blobs = blobs
        self._portable_blobs: bytes | None = None  # pickled once, sent with each job
        self._closing = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False, **self.init_options}
            try:
                await asyncio.to_thread(ray.init, address=self.address, namespace=self.namespace, **options)
            except Exception as exc:
                where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
                raise ConfigError(
                    f"cannot start or reach {where} ({type(exc).__name__}: {exc}); check ray_address= / "
                    "SLIPSTREAM_RAY_ADDRESS (`ray status` on the head node), or use executor='local'"
                ) from exc
            self._owns_ray = True
        self._capacity = Capacity(await asyncio.to_thread(ray.cluster_resources))
        self._actor_class = ray.remote(SlipstreamActor)
        self._reaper = self._loop.create_task(self._reap_idle(), name="slipstream-ray-reaper")

    async def close(self) -> None:
        """Cancel everything in flight, stop this executor's actors, and Ray if `start` started it."""
        import ray

        self._closing = True
        for task in [*self._tasks, *([self._reaper] if self._reaper else [])]:
            task.cancel()
        # async bodies are cancelled in their actors first, so that their `finally` blocks run
        cancels = [
            actor.handle.cancel.remote(key_bytes(key))
            for key, attempt in self._attempts.items()
            if attempt.is_async and attempt.final is None and (actor := attempt.actor) is not None
        ]
        if cancels:
            await asyncio.wait([asyncio.ensure_future(_swallow(ref)) for ref in cancels], timeout=CANCEL_GRACE_SECONDS)
        drivers = [a.driver for a in self._attempts.values() if a.driver is not None and not a.driver.done()]
        self._attempts.clear()
        for driver in drivers:
            driver.cancel()
        for pool in self._pools.values():
            pool.waiting.clear()
            for actor in list(pool.actors):
                self._stop_actor(pool, actor)
        self._pools.clear()
        if drivers or self._tasks:
            await asyncio.wait([*drivers, *self._tasks], timeout=CANCEL_GRACE_SECONDS)
        if self._owns_ray:
            self._owns_ray = False
            await asyncio.to_thread(ray.shutdown)

    # --- Executor ------------------------------------------------------------------------------

    async def submit(self, request: TaskRequest) -> str:
        """Queue the attempt for an actor of its shape, unless ``request.key`` is known.

        Returns:
            ``ray:<namespace>/<executor id>``: where a restarted engine finds the attempt.

        Raises:
            RuntimeError: `start` was not awaited first, or the executor was closed.
            ConfigError: no node of the cluster has the resources the task asks for.
        """
        if self._capacity is None or self._closing:
            raise RuntimeError("RayExecutor.submit before start() or after close(): await executor.start(report)")
        key = request.key
        if key in self._attempts:
            return self._handle
        shape = shape_of(request.resources)
        if not self._capacity.ever_fits(shape):
            raise ConfigError(
                f"task {request.task.name!r} asks for {shape.label()} but the Ray cluster has "
                f"{self._capacity.total}: lower its resources=, or add nodes that have them"
            )
        if self._blobs is not None:
            request = await resolve_request(request, self._blobs)
            if key in self._attempts:  # submitted again while its blobs were read
                return self._handle
        from plugins.ray._actor import Job

        request = msgspec.structs.replace(request, task=portable_ref(request.task))
        # secrets come from the engine's environment, read now (the actor's is not the engine's)
        if self._portable_blobs is None and self._blobs is not None:
            self._portable_blobs = portable_blobs(self._blobs)
        job = msgspec.msgpack.encode(Job(request, read_secrets(request.secrets), self._portable_blobs))
        is_async = request.kind == "task" and request.task.is_async
        attempt = _Attempt(key, shape, job, is_async)
        self._attempts[key] = attempt
        self._pool(shape).waiting.append(attempt)
        self._pump()
        return self._handle

    async def poll(self, key: TaskKey, handle: str = "") -> TaskStatus:
        """The attempt's status; one this executor does not hold is looked for by ``handle``.

        Returns:
            ``queued``, ``running``, ``succeeded`` or ``failed``; ``lost`` when neither this
            executor nor the actors named by ``handle`` know the attempt.
        """
        attempt = self._attempts.get(key)
        if attempt is None and handle.startswith(HANDLE_PREFIX) and handle != self._handle:
            attempt = await self._adopt(key, handle)
        if attempt is None:
            return TaskStatus(phase="lost")
        if attempt.final is not None:
            return attempt.final
        return TaskStatus(
            phase=attempt.phase,
            worker=attempt.worker,
            gpu_ids=attempt.gpu_ids,
            started_at=attempt.started_at,
            handle=self._handle,
        )

    async def cancel(self, key: TaskKey, handle: str = "") -> None:
        """Stop the attempt and forget it; it is never reported.

        An async body is cancelled in its actor; a sync body's actor is killed. An attempt this
        executor does not hold is looked for among the actors named by ``handle``.
        """
        attempt = self._attempts.pop(key, None)
        if attempt is None:
            if handle.startswith(HANDLE_PREFIX) and handle != self._handle:
                await self._elsewhere.cancel(key, handle, CANCEL_GRACE_SECONDS)
            return
        if attempt.final is not None:
            return
        if attempt.remote is not None:  # adopted: it runs on an actor of the engine before a restart
            await cancel_on(attempt.remote, key, CANCEL_GRACE_SECONDS)
            return
        actor = attempt.actor
        if actor is None:
            with contextlib.suppress(ValueError):
                self._pool(attempt.shape).waiting.remove(attempt)
            return
        pool = self._pool(actor.shape)
        if attempt.is_async:
            try:
                # bounded: a body that swallows the cancellation gets its actor killed below
                outcome = await asyncio.wait_for(actor.handle.cancel.remote(key_bytes(key)), CANCEL_GRACE_SECONDS)
            except Exception:
                outcome = "dead"
            if outcome == "cancelled" and attempt.driver is not None:
                await asyncio.wait([attempt.driver], timeout=CANCEL_GRACE_SECONDS)
                return
        self._stop_actor(pool, actor)
        self._pump()

    def forget(self, key: TaskKey) -> None:
        """Drop a finished attempt's result."""
        attempt = self._attempts.get(key)
        if attempt is not None and attempt.final is not None:
            del self._attempts[key]

    def can_run(self, task: TaskRef) -> bool:
        """Whether ``task`` can be loaded here (it is sent to actors by import path or pickled)."""
        return can_load(task)

    # --- pools ---------------------------------------------------------------------------------

    def pool_sizes(self) -> dict[str, int]:
        """How many actors each pool holds, by shape label (for tests and benchmarks)."""
        return {pool.shape.label(): len(pool.actors) for pool in self._pools.values() if pool.actors}

    def _pool(self, shape: Shape) -> _Pool:
        pool = self._pools.get(shape)
        if pool is None:
            pool = self._pools[shape] = _Pool(shape)
        return pool

    def _pump(self) -> None:
        """Hand waiting attempts to idle actors; start actors where attempts wait and room allows,
        stopping idle actors of other shapes to make room."""
        if self._closing or self._capacity is None:
            return
        capacity = self._capacity
        for pool in list(self._pools.values()):
            idle = pool.idle()
            while pool.waiting and idle:
                self._dispatch(pool.waiting.popleft(), idle.pop())
            while len(pool.waiting) > pool.starting() and self._below_max(pool):
                if not capacity.fits(pool.shape):
                    spare = [
                        (other, actor)
                        for other in self._pools.values()
                        if other is not pool and not other.waiting
                        for actor in other.idle()
                    ]
                    if not capacity.fits(pool.shape, [actor.shape for _, actor in spare]):
                        break
                    for other, actor in spare:
                        if capacity.fits(pool.shape):
                            break
                        self._stop_actor(other, actor)
                self._start_actor(pool)

    def _below_max(self, pool: _Pool) -> bool:
        limit = self.max_actors
        if limit is None and not any(pool.shape.demand().values()):
            assert self._capacity is not None
            limit = max(1, int(self._capacity.total["CPU"]))
        return limit is None or len(pool.actors) < limit

    def _start_actor(self, pool: _Pool) -> None:
        assert self._capacity is not None and self._loop is not None
        self._spawned += 1
        name = f"{self.executor_id}-{self._spawned}"
        handle = self._actor_class.options(
            name=name,
            namespace=self.namespace,
            lifetime="detached",
            max_restarts=0,
            **pool.shape.options(),
        ).remote(name, [entry or os.getcwd() for entry in sys.path], self.orphan_timeout)
        actor = _Actor(name, pool.shape, handle)
        pool.actors.append(actor)
        self._capacity.take(pool.shape)
        self._spawn(self._await_ready(pool, actor))

    async def _await_ready(self, pool: _Pool, actor: _Actor) -> None:
        from plugins.ray._actor import ActorInfo

        try:
            info = msgspec.msgpack.decode(await actor.handle.info.remote(), type=ActorInfo)
        except Exception as exc:
            log.warning(
                "Ray actor %s (%s) failed to start: %s: %s", actor.name, pool.shape.label(), type(exc).__name__, exc
            )
            self._stop_actor(pool, actor)
            if pool.waiting and not pool.actors:
                self._fail_waiting(
                    pool, f"a Ray actor for {pool.shape.label()} failed to start ({type(exc).__name__}: {exc})"
                )
            return
        actor.pid, actor.node, actor.gpu_ids = info.pid, info.node, info.gpu_ids
        actor.ready, actor.idle_since = True, time.monotonic()
        self._pump()

    def _fail_waiting(self, pool: _Pool, message: str) -> None:
        while pool.waiting:
            attempt = pool.waiting.popleft()
            self._finish(attempt, _system_failure(attempt, message))

    def _stop_actor(self, pool: _Pool, actor: _Actor) -> None:
        """Kill the actor and give its reservation back (its attempt, if any, was dealt with)."""
        import ray

        if actor in pool.actors:
            pool.actors.remove(actor)
            assert self._capacity is not None
            self._capacity.give(actor.shape)
        with contextlib.suppress(Exception):  # already dead
            ray.kill(actor.handle, no_restart=True)

    async def _reap_idle(self) -> None:
        """Stop actors idle for longer than their pool's timeout; tell the others this engine is
        alive (an actor that stops hearing from it exits, see ``orphan_timeout``); re-read the
        cluster's size now and then (nodes join and leave a cluster)."""
        import ray

        resized = heard = time.monotonic()
        while True:
            await asyncio.sleep(min(self.idle_timeout, self.gpu_idle_timeout, self.orphan_timeout / 3, 5.0))
            now = time.monotonic()
            if now - resized >= _RESIZE_INTERVAL and self._capacity is not None:
                resized = now
                with contextlib.suppress(Exception):  # a GCS hiccup: keep the last known size
                    self._capacity.resize(await asyncio.to_thread(ray.cluster_resources))
                    self._pump()
            for pool in self._pools.values():
                timeout = self.gpu_idle_timeout if pool.shape.gpus else self.idle_timeout
                for actor in pool.idle():
                    if now - actor.idle_since >= timeout:
                        self._stop_actor(pool, actor)
            if now - heard >= self.orphan_timeout / 3:
                heard = now
                for pool in self._pools.values():
                    for actor in pool.actors:
                        if actor.ready:
                            actor.handle.info.remote()  # fire and forget: only its arrival matters

    # --- attempts ------------------------------------------------------------------------------

    def _dispatch(self, attempt: _Attempt, actor: _Actor) -> None:
        """Send the attempt to an idle, ready actor: it starts there now."""
        actor.attempt = attempt
        attempt.actor = actor
        attempt.phase, attempt.started_at = "running", datetime.now(UTC)
        attempt.worker = f"ray:{actor.name}[pid {actor.pid} on {actor.node}]"
        attempt.gpu_ids = list(actor.gpu_ids)
        ref = actor.handle.run.remote(attempt.job)
        attempt.job = b""  # sent: Ray holds it now
        attempt.driver = self._loop.create_task(self._drive(attempt, actor, ref)) if self._loop else None
        self._report(attempt.key)

    async def _drive(self, attempt: _Attempt, actor: _Actor, ref: Any) -> None:
        import ray

        pool = self._pool(actor.shape)
        try:
            status = msgspec.msgpack.decode(await ref, type=TaskStatus)
        except asyncio.CancelledError:
            raise
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            self._stop_actor(pool, actor)
            status = _system_failure(
                attempt,
                f"Ray actor {actor.name} (pid {actor.pid}) died while running the attempt ({type(exc).__name__}); "
                "the next attempt runs on a fresh actor (a crash, os._exit, the out-of-memory killer or a lost "
                "node ends an actor; its log under /tmp/ray/session_latest/logs may say which)",
            )
        except ray.exceptions.TaskCancelledError:
            status = None
        except Exception as exc:
            status = _system_failure(attempt, f"Ray call failed: {type(exc).__name__}: {exc}")
        else:
            actor.attempt = None
            actor.idle_since = time.monotonic()
        if actor.attempt is attempt:  # failed call on a live actor: the actor is free again
            actor.attempt = None
            actor.idle_since = time.monotonic()
        if status is not None:
            # the start this executor reported stands: the actor's clock may differ from the engine's
            self._finish(attempt, msgspec.structs.replace(status, worker=attempt.worker, started_at=attempt.started_at))
        self._pump()

    def _finish(self, attempt: _Attempt, status: TaskStatus) -> None:
        if self._attempts.get(attempt.key) is attempt and attempt.final is None:
            attempt.final = msgspec.structs.replace(status, handle=self._handle)
            self._report(attempt.key)

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- attempts of another executor (this engine before a restart) ---------------------------

    async def _adopt(self, key: TaskKey, handle: str) -> _Attempt | None:
        """Track an attempt that the actors named by ``handle`` know (see `Elsewhere`)."""
        found = await self._elsewhere.find(key, handle)
        if found is None or key in self._attempts:
            return self._attempts.get(key)
        remote, answer = found
        attempt = _Attempt(key, Shape(0.0), b"", False, remote=remote)
        self._attempts[key] = attempt
        if answer == b"running":
            attempt.phase, attempt.worker = "running", f"ray:adopted[{handle}]"
            attempt.driver = self._loop.create_task(self._await_adopted(attempt, remote)) if self._loop else None
        else:
            final = msgspec.msgpack.decode(answer, type=TaskStatus)
            attempt.final = msgspec.structs.replace(final, handle=self._handle)
        return attempt

    async def _await_adopted(self, attempt: _Attempt, remote: Any) -> None:
        try:
            answer = await remote.wait.remote(key_bytes(attempt.key))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = f"the Ray actor running the attempt died ({type(exc).__name__})"
            self._finish(attempt, _system_failure(attempt, message))
            return
        if answer is None:
            self._finish(attempt, _system_failure(attempt, "the Ray actor running the attempt no longer knows it"))
        else:
            self._finish(attempt, msgspec.msgpack.decode(answer, type=TaskStatus))


async def _swallow(ref: Any) -> None:
    with contextlib.suppress(Exception):  # a dead actor has nothing left to cancel
        await ref


def _system_failure(attempt: _Attempt, message: str) -> TaskStatus:
    error = ErrorInfo(kind="system", message=message, retryable=True, node_id=attempt.key.node_id)
    return TaskStatus(
        phase="failed", error=error, worker=attempt.worker, gpu_ids=attempt.gpu_ids, started_at=attempt.started_at
    )
