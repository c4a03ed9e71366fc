"""Carrying out the cache actions against the catalog, and the reservation heartbeats.

The planner decides (`propeller._cache`); this module does the I/O once the round's events are
durable. A lookup's answer is handed to the controller, which gives it to the node's next round.
Records are written by a task of their own, in batches, and lookups in this process see them at
once; `CatalogActions.flush` waits for them (the loop and the heartbeat service do, when they stop).
The catalog is an optimisation: when it cannot be reached a lookup answers with an error (the node
computes) and a record is skipped (logged), so an outage of the catalog never fails an execution.

Reservations (``cache_serialize``) are leases: `ReservationHeartbeat` is the service that renews
the ones held by nodes of this process while those nodes still want them, so that a crashed
process's reservations lapse after ``ttl`` and another execution takes the key over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import anyio

from engine.interfaces import Artifact, CacheKey, Catalog, LineageEdge, Service, ServiceContext, ServiceHealth
from propeller._actions import CacheLookup, CacheOutcome, CachePut, CacheRelease

__all__ = ["CatalogActions", "ReservationHeartbeat"]

log = logging.getLogger("slipstream.propeller")

_WRITE_BATCH = 5000  # records per transaction of the writer


class CatalogActions:
    """The cache actions' dispatcher, and the reservations this process holds.

    Args:
        catalog: the started catalog.
        answer: receives ``(execution_id, node_id, outcome)`` of each lookup (the controller keeps
            it for the node's next round and schedules that round).
        clock: the current UTC time (what reservations and ages are measured against).
        reservation_ttl: seconds a reservation lasts without a heartbeat.
    """

    def __init__(
        self,
        catalog: Catalog,
        answer: Callable[[str, str, CacheOutcome], None],
        clock: Callable[[], datetime],
        reservation_ttl: float = 30.0,
    ) -> None:
        self.catalog = catalog
        self._answer = answer
        self._clock = clock
        self.reservation_ttl = reservation_ttl
        # (key digest, owner) -> (execution id, node id) of the reservations held here
        self.held: dict[tuple[str, str], tuple[str, str]] = {}
        # records on their way to the catalog (written in batches by a task of their own), and the
        # newest of them by key, which lookups of this process see at once
        self._queue: list[tuple[CachePut, datetime]] = []
        self._pending: dict[str, Artifact] = {}
        self._writer: asyncio.Task[None] | None = None

    async def carry_out(self, action: CacheLookup | CachePut | CacheRelease) -> None:
        """Do one cache action; never raises for a catalog failure (see the module docstring)."""
        match action:
            case CacheLookup():
                await self._lookup(action)
            case CachePut():
                await self._put(action)
            case CacheRelease():
                await self._release(action.key, action.owner)

    async def _lookup(self, action: CacheLookup) -> None:
        try:
            now = self._clock()
            # before the read: a record the writer commits meanwhile leaves `_pending` only after
            # its commit, so it is either seen here or found by the read, never missed by both
            on_the_way = {key.digest: self._pending[key.digest] for key in action.keys if key.digest in self._pending}
            artifacts = await self.catalog.lookup_many(action.keys, now=now, max_age=action.max_age)
            artifacts = self._with_pending(action.keys, artifacts, on_the_way, now, action.max_age)
            holder = ""
            if action.reserve and artifacts and artifacts[0] is None:
                digest = action.keys[0].digest
                reservation = await self.catalog.reserve(digest, action.owner, now=now, ttl=self.reservation_ttl)
                holder = reservation.owner
                if holder == action.owner:
                    self.held[digest, holder] = (action.execution_id, action.node_id)
            outcome = CacheOutcome(artifacts, list(action.indices), holder)
        except Exception as exc:
            log.warning(
                "cache lookup for %s/%s failed (%s: %s); the node runs without the cache",
                action.execution_id, action.node_id, type(exc).__name__, exc,
            )  # fmt: skip
            outcome = CacheOutcome([], list(action.indices), error=f"{type(exc).__name__}: {exc}")
        self._answer(action.execution_id, action.node_id, outcome)

    @staticmethod
    def _with_pending(
        keys: list[CacheKey],
        found: list[Artifact | None],
        on_the_way: dict[str, Artifact],
        now: datetime,
        max_age: float | None,
    ) -> list[Artifact | None]:
        """Lookups see this process's records still on their way to the catalog."""
        if not on_the_way:
            return found
        oldest = now - timedelta(seconds=max_age) if max_age is not None else None
        result = list(found)
        for i, key in enumerate(keys):
            if result[i] is None:
                pending = on_the_way.get(key.digest)
                if pending is not None and (oldest is None or pending.created_at >= oldest):
                    result[i] = pending
        return result

    async def _put(self, action: CachePut) -> None:
        """Queue the records for the writer: a round does not wait for the catalog (a map's chunks
        would otherwise wait for each other's records, and shrink as they measure that wait)."""
        now = self._clock()
        for draft in action.drafts:
            key = draft.key
            self._pending[key.digest] = Artifact(
                id=draft.artifact_id, dataset=key.dataset, key=key.digest, input_hash=key.inputs,
                outputs=draft.outputs, execution_id=draft.execution_id, node_id=draft.node_id,
                attempt=draft.attempt, created_at=now,
            )  # fmt: skip
        self._queue.append((action, now))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write(), name="slipstream-catalog-writer")

    async def flush(self) -> None:
        """Wait until every queued record is in the catalog (or its write failed and was logged)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            drafts = [draft for action, _ in batch for draft in action.drafts]
            edges = [LineageEdge(d.artifact_id, "out", d.execution_id, d.node_id, d.attempt) for d in drafts]
            for action, _ in batch:
                if action.run is not None:
                    run = action.run
                    edges += [LineageEdge(a, "in", run.execution_id, run.node_id, run.attempt) for a in action.consumed]
            try:
                for start in range(0, len(drafts), _WRITE_BATCH):
                    part = drafts[start : start + _WRITE_BATCH]
                    await self.catalog.put_many(part, now=batch[0][1])
                if edges:
                    await self.catalog.record_lineage(edges)
                for action, at in batch:
                    if action.publish is not None and action.drafts:
                        publication = action.publish
                        artifact_id = action.drafts[0].artifact_id
                        await self.catalog.publish(artifact_id, publication.name, publication.partitions, now=at)
            except Exception as exc:
                first = drafts[0] if drafts else None
                log.warning(
                    "recording %d cached output(s) of %s failed (%s: %s); they will be computed again next time",
                    len(drafts), f"{first.execution_id}/{first.node_id}" if first else "?", type(exc).__name__, exc,
                )  # fmt: skip
            for draft in drafts:
                pending = self._pending.get(draft.key.digest)
                if pending is not None and pending.id == draft.artifact_id:
                    del self._pending[draft.key.digest]
            # only once the outputs are in the catalog: the executions waiting for them then hit
            for action, _ in batch:
                for key, owner in action.owners:
                    await self._release(key, owner)

    async def _release(self, key: str, owner: str) -> None:
        self.held.pop((key, owner), None)
        try:
            await self.catalog.release(key, owner)
        except Exception as exc:  # it lapses after its ttl anyway
            log.warning("releasing reservation %s of %s failed (%s: %s)", key[:12], owner, type(exc).__name__, exc)

    async def heartbeat(self, wanted: Callable[[str, str], bool]) -> int:
        """Renew the reservations whose nodes still want them, release the others; return how
        many were renewed."""
        keep: list[tuple[str, str]] = []
        for (key, owner), (execution_id, node_id) in list(self.held.items()):
            # a node that succeeded keeps its key until its outputs are written (the writer releases it)
            if key in self._pending or wanted(execution_id, node_id):
                keep.append((key, owner))
            else:
                await self._release(key, owner)
        if not keep:
            return 0
        return await self.catalog.heartbeat(keep, now=self._clock(), ttl=self.reservation_ttl)


class ReservationHeartbeat(Service):
    """Renews this process's cache reservations every ``ttl / 3`` seconds (a `Service`); when it
    stops, it waits for the records still on their way to the catalog.

    Args:
        actions: the controller's cache dispatcher, which knows the reservations held.
        wanted: whether node ``(execution_id, node_id)`` still wants its reservation (it has not
            ended, and its execution is still run here).
    """

    name = "cache-reservations"

    def __init__(self, actions: CatalogActions, wanted: Callable[[str, str], bool]) -> None:
        self.actions = actions
        self.wanted = wanted
        self._health = ServiceHealth()

    async def start(self, context: ServiceContext) -> None:
        return

    async def run(self) -> None:
        interval = max(self.actions.reservation_ttl / 3, 0.05)
        while True:
            await anyio.sleep(interval)
            try:
                await self.actions.heartbeat(self.wanted)
            except Exception as exc:
                self._health = ServiceHealth(ok=False, detail=f"renewing reservations failed: {exc}")
                log.warning("renewing cache reservations failed (%s: %s); retrying", type(exc).__name__, exc)
            else:
                self._health = ServiceHealth()

    async def stop(self) -> None:
        await self.actions.flush()  # what the loop's last rounds recorded reaches the catalog

    def health(self) -> ServiceHealth:
        return self._health
