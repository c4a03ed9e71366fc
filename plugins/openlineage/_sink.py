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
``health``, and nothing is skipped.

It reads the store directly rather than through ``Engine.subscribe``: plugins may import only the
engine's floor, and the loop it needs (read a page, emit, move the cursor) is a few lines.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio

from engine.errors import ConfigError
from engine.events import AnyEvent
from engine.interfaces import EventStore, Service, ServiceContext, ServiceHealth

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
        self._store: EventStore | None = None
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
        page = await store.read_all(self._position, self.batch)
        if not page:
            if wait:
                await store.wait_for_changes(timeout=self.poll)
            return 0
        for item in page:
            if item.seq != self._pending_seq:
                self._pending = await self._map(store, item.event)
                self._pending_seq = item.seq
            while self._pending:
                await anyio.to_thread.run_sync(self.client.emit, self._pending[0])
                self._pending.pop(0)
                self.emitted += 1
            self._position = item.seq
        await self._save()
        self._health = ServiceHealth()
        return len(page)

    async def _map(self, store: EventStore, event: AnyEvent) -> list[Any]:
        if self.mapper.needs_history(event):
            earlier = await store.read(event.execution_id)
            self.mapper.load(event.execution_id, [e for e in earlier if e.version < event.version])
        return self.mapper.map(event)

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
