"""`OpenLineageSink`: the event sink (a `Service`) that emits OpenLineage RunEvents for node runs.

It reads the committed events of the store in commit order, from a durable cursor
(``subscription:<durable>``, the same position a durable ``Engine.subscribe(durable=...)`` of that
name keeps), maps them with `LineageMapper` and emits the RunEvents through an OpenLineage client.
It runs in ``slipstream serve --sink openlineage[=TRANSPORT]`` (entry point ``openlineage`` in
``slipstream.event_sinks``), in any engine given it in ``services=``, and alone as ``slipstream
lineage run [--transport ...]``.

Delivery is at least once: the cursor moves after the RunEvents of each event are emitted, so a
restart may emit the last few again (with the same run ids; lineage servers keep one run per id).
A transport that fails (a lineage server down) is retried with a growing pause, reported by
``health``, and nothing is skipped, but for the events of an execution whose stored log is
corrupt: they cannot be read or mapped (the execution is quarantined), so the sink moves past
them with one error line per execution.

Datasets come from the engine's catalog (``ServiceContext.catalog``): the COMPLETE of a node run
lists the artifacts the run consumed and produced. The catalog records them just after the commit
of the run's success (by a writer of its own), so when the fold says a run has them and the catalog
holds none yet, the sink waits for them, up to ``lineage_wait`` seconds (an engine with caching off
records none: after one such wait the sink stops waiting for that execution).

It reads the store directly rather than through ``Engine.subscribe``: plugins may import only the
engine's floor, and the loop it needs (read a page, emit, move the cursor) is a few lines.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio

from engine.errors import ConfigError, CorruptEvent
from engine.events import AnyEvent
from engine.interfaces import Artifact, Catalog, EventStore, Service, ServiceContext, ServiceHealth
from plugins.openlineage._mapping import LineageWanted, RunLineage

__all__ = ["OpenLineageSink"]

log = logging.getLogger("slipstream.openlineage")


def _producer() -> str:
    try:
        release = version("slipstream")
    except PackageNotFoundError:
        release = "unknown"
    return f"urn:slipstream:{release}"


class OpenLineageSink(Service):
    """Emits OpenLineage RunEvents for the node runs (and executions) recorded in the event store.

    Args:
        transport: where RunEvents go: ``console``, ``file:PATH``, ``http(s)://...``,
            ``kafka://BROKERS/TOPIC``, ``nats://HOST:PORT/SUBJECT``, or None for the OpenLineage
            client's own configuration (``openlineage.yml``, ``OPENLINEAGE_*`` variables).
        durable: the name of the cursor that remembers how far it got.
        client: a ready ``OpenLineageClient`` (instead of ``transport``).
        producer: the URI RunEvents name as their producer.
        batch: events read per query.
        poll: the longest wait for new events before reading again.
        lineage_wait: the longest wait for the catalog to record a node run's artifacts.

    Raises:
        ConfigError: openlineage-python is not installed, or the transport is unknown.
    """

    name = "openlineage"

    def __init__(
        self,
        transport: str | None = None,
        *,
        durable: str = "openlineage",
        client: Any = None,
        producer: str | None = None,
        batch: int = 500,
        poll: float = 1.0,
        lineage_wait: float = 5.0,
    ) -> None:
        try:
            from plugins.openlineage._mapping import LineageMapper
            from plugins.openlineage._transports import client_for
        except ImportError as exc:
            raise ConfigError(
                f"OpenLineage needs the openlineage-python client ({exc}): pip install 'slipstream[openlineage]'"
            ) from exc
        if not durable.strip():
            raise ConfigError("the OpenLineage sink needs a non-empty durable= name for its cursor")
        self.transport = transport
        self.cursor = f"subscription:{durable}"
        self.client = client if client is not None else client_for(transport)
        self.mapper = LineageMapper(producer or _producer())
        self.batch = batch
        self.poll = poll
        self.lineage_wait = lineage_wait
        self._store: EventStore | None = None
        self._catalog: Catalog | None = None
        self._unrecorded: dict[str, None] = {}  # executions whose artifacts did not come (oldest first)
        self._corrupt: set[str] = set()  # executions whose events are skipped (said once each)
        self._position = 0
        self._pending: list[Any] = []  # RunEvents of the event at _pending_seq not yet emitted
        self._pending_seq = 0
        self._health = ServiceHealth()
        self.emitted = 0

    def describe(self) -> str:
        """The transport in words, for logs."""
        kind = getattr(self.client.transport, "kind", None) or type(self.client.transport).__name__
        return f"the {kind} transport" + (f" ({self.transport})" if self.transport else "")

    async def start(self, context: ServiceContext) -> None:
        """Find the position where the sink stopped last time."""
        self._store = context.store
        self._catalog = context.catalog
        self._position = await context.store.read_cursor(self.cursor)

    async def run(self) -> None:
        """Emit RunEvents as events are committed, until cancelled; failures are retried."""
        pause = 0.5
        while True:
            try:
                await self.step()
            except Exception as exc:
                self._health = ServiceHealth(ok=False, detail=f"{type(exc).__name__}: {exc}")
                log.warning("OpenLineage sink: %s; retrying in %.1fs", self._health.detail, pause)
                await self._save()
                await anyio.sleep(pause)
                pause = min(pause * 2, 30.0)
            else:
                pause = 0.5

    async def step(self, wait: bool = True) -> int:
        """Handle the next page of events (after waiting up to ``poll`` for one, if ``wait``);
        return how many events were handled."""
        store = self._require_store()
        try:
            page = await store.read_all(self._position, self.batch)
        except CorruptEvent as exc:
            if exc.seq is None:
                raise
            self._skip(exc, f"the event at seq {exc.seq}, which can never be read")
            self._position = exc.seq
            await self._save()
            return 0
        if not page:
            if wait:
                await store.wait_for_changes(timeout=self.poll)
            return 0
        for item in page:
            if item.seq != self._pending_seq:
                try:
                    self._pending = await self._map(store, item.event)
                except CorruptEvent as exc:  # its history does not read: nothing to map it with
                    if exc.execution_id != item.event.execution_id:
                        raise
                    self._skip(exc, f"the events of execution {exc.execution_id}")
                    self._pending = []
                self._pending_seq = item.seq
            while self._pending:
                await anyio.to_thread.run_sync(self.client.emit, self._pending[0])
                self._pending.pop(0)
                self.emitted += 1
            self._position = item.seq
        await self._save()
        self._health = ServiceHealth()
        return len(page)

    def _skip(self, exc: CorruptEvent, what: str) -> None:
        """Say once per execution that its corrupt log makes the sink skip events of it."""
        if exc.execution_id in self._corrupt:
            return
        self._corrupt.add(exc.execution_id)
        log.error("OpenLineage sink: skipping %s: %s", what, exc)

    async def _map(self, store: EventStore, event: AnyEvent) -> list[Any]:
        if self.mapper.needs_history(event):
            earlier = await store.read(event.execution_id)
            self.mapper.load(event.execution_id, [e for e in earlier if e.version < event.version])
        wanted = self.mapper.lineage_wanted(event)
        lineage = None
        if wanted is not None and self._catalog is not None:
            lineage = await self._lineage(self._catalog, event.execution_id, wanted)
        return self.mapper.map(event, lineage)

    async def _lineage(self, catalog: Catalog, execution_id: str, wanted: LineageWanted) -> RunLineage:
        """The artifacts the run consumed and produced, waiting for the catalog's writer when they
        are expected and not recorded yet."""
        wait = wanted.expected and execution_id not in self._unrecorded
        deadline = anyio.current_time() + self.lineage_wait
        pause = 0.02
        while True:
            edges = [
                edge
                for edge in await catalog.edges(execution_id=execution_id, node_id=wanted.node_id)
                if edge.attempt == wanted.attempt
            ]
            if edges or not wait or anyio.current_time() >= deadline:
                break
            await anyio.sleep(pause)
            pause = min(pause * 2, 0.5)
        if wait and not edges:
            log.info(
                "OpenLineage sink: the catalog holds no artifacts of %s/%s after %.1fs (caching off where it "
                "ran?); its runs are emitted without datasets", execution_id, wanted.node_id, self.lineage_wait,
            )  # fmt: skip
            self._unrecorded[execution_id] = None
            if len(self._unrecorded) > 10_000:
                del self._unrecorded[next(iter(self._unrecorded))]
        found: dict[str, list[Artifact]] = {"in": [], "out": []}
        for edge in edges:
            artifact = await catalog.get(edge.artifact)
            if artifact is not None:  # evicted since: nothing to name
                found[edge.direction].append(artifact)
        return RunLineage(inputs=found["in"], outputs=found["out"])

    async def _save(self) -> None:
        if self._store is not None and self._position:
            try:
                await self._store.write_cursor(self.cursor, self._position)
            except Exception as exc:  # the store is down too: the next page saves it
                log.warning("OpenLineage sink: saving the cursor failed: %s: %s", type(exc).__name__, exc)

    async def stop(self) -> None:
        """Save the position and close the client's transport (flushing what it buffers)."""
        await self._save()
        await anyio.to_thread.run_sync(self.client.close, 10.0)

    def health(self) -> ServiceHealth:
        """Unhealthy while emitting (or reading) fails; the detail says why."""
        return self._health

    def _require_store(self) -> EventStore:
        if self._store is None:
            raise ConfigError("OpenLineageSink.step before start(): run it as an engine service, or start it first")
        return self._store
