"""The transactional outbox relay: committed events of the log, published to JetStream (DESIGN 10).

`NatsRelay` is a `Service` (entry point ``nats`` in ``slipstream.event_sinks``; an engine with
``nats=URL`` runs one). It reads the log with ``read_all`` (commit-safe: below the transaction
high-water mark, so an event committed late with a lower ``seq`` is never passed over) from its
durable cursor ``relay:<stream>`` in the store, and publishes each event as JSON to
``<prefix>.<project>.<domain>.<execution_id>`` with ``Nats-Msg-Id: <execution_id>:<version>``.

- **Order.** Publishes go out one after another on one connection in ``seq`` order, so each
  execution's events are stored in version order; up to ``window`` of them await their acks at once
  (`AckWindow`), and the cursor only moves past a prefix of acked ones.
- **Nothing lost, nothing doubled.** After a crash, an ack that does not come, or a lost
  connection, the relay drops the connection (and whatever it still buffered, which must not reach
  the stream after what is sent again), reconnects and publishes again from the last acked
  position; JetStream drops the messages it already holds by their Msg-Id (within the stream's
  ``duplicate_window``; the cursor is written at least every ``cursor_interval`` while busy and
  whenever the relay catches up, so a restart repeats at most that much).
- **One relay at a time.** The relay holds the store's lease ``relay:<stream>`` (a Postgres session
  advisory lock, an ``flock`` for SQLite), checked before every page; the others stand by and take
  over when its process dies or it stops.
- **Unreachable NATS.** In an engine that runs executions (a server) the relay logs, retries with
  back-off and reports it through ``health()``; in a client engine (``run_loop=False``) it is a
  `ConfigError` at start.

At start the relay creates the stream (subjects ``<prefix>.>``, limits retention, file storage,
``duplicate_window``, ``max_age``) or updates it to that configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio

from engine.errors import ConfigError, CorruptEvent, StoreUnavailable
from engine.events import AnyEvent, ExecutionCreated, encode_event_json
from engine.interfaces import EventStore, GlobalEvent, Service, ServiceContext, ServiceHealth
from plugins.nats._connect import connect
from plugins.nats._outbox import DEFAULT_STREAM, SUBJECT_PREFIX, AckWindow, check_stream_name, event_subject, msg_id

__all__ = ["NatsRelay", "relay_cursor"]

log = logging.getLogger("slipstream.nats")

# back-off between attempts after a failure (NATS or the store), in seconds
_MIN_RETRY = 0.2
_MAX_RETRY = 5.0
# executions whose subject the relay remembers (a bounded map, oldest dropped)
_SUBJECT_CACHE = 10_000


def relay_cursor(stream: str = DEFAULT_STREAM) -> str:
    """The name of the relay's lease and of its durable cursor in the store."""
    return f"relay:{stream}"


class _AckMissing(Exception):
    def __init__(self, seq: int, seconds: float) -> None:
        super().__init__(f"no ack from JetStream for the event at seq {seq} within {seconds:g}s")


class NatsRelay(Service):
    """Publishes every committed event to JetStream, once, in order per execution.

    Args:
        url: the NATS server (``nats://host:4222``).
        stream: the JetStream stream written to (created or updated at start).
        prefix: the subject prefix; the stream holds ``<prefix>.>``.
        window: publishes awaiting their acks at most.
        batch: events read from the store per query.
        duplicate_window: seconds during which JetStream drops a repeated Msg-Id; a relay that
            restarts later than this after a crash may publish its last page again.
        max_age: seconds events are kept in the stream (0: for ever, within the server's limits).
        ack_timeout: seconds to wait for the oldest ack before the connection is taken as lost.
        poll: the longest wait for a change of the log before reading it again.
        lease_poll: seconds between tries of a relay that stands by for the lease.
        connect_timeout: seconds one connection attempt may take.
        cursor_interval: while pages keep coming, the cursor is written at most this often (it is
            always written when the relay catches up, stops or fails); a restart after a crash
            publishes again at most what was acked in that time (dropped by the Msg-Id window).
        clock: monotonic seconds (injectable for tests).

    Raises:
        ConfigError: a stream name or prefix JetStream refuses, or a window or batch below 1.
    """

    name = "nats-relay"

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        prefix: str = SUBJECT_PREFIX,
        window: int = 1024,
        batch: int = 1000,
        duplicate_window: float = 120.0,
        max_age: float = 0.0,
        ack_timeout: float = 5.0,
        poll: float = 0.5,
        lease_poll: float = 1.0,
        connect_timeout: float = 5.0,
        cursor_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_stream_name(stream, prefix)
        if window < 1 or batch < 1:
            raise ConfigError(f"the relay's window ({window}) and batch ({batch}) must be at least 1")
        self.url = url
        self.stream = stream
        self.prefix = prefix
        self.window = window
        self.batch = batch
        self.duplicate_window = duplicate_window
        self.max_age = max_age
        self.ack_timeout = ack_timeout
        self.poll = poll
        self.lease_poll = lease_poll
        self.connect_timeout = connect_timeout
        self.cursor_interval = cursor_interval
        self._clock = clock
        self.lease = relay_cursor(stream)
        self._store: EventStore | None = None
        self._serving = False
        self._nc: Any = None
        self._js: Any = None
        self._acks: AckWindow | None = None
        self._written = 0  # the cursor as last written
        self._written_at = 0.0
        self._subjects: dict[str, str] = {}  # execution id -> its subject
        self._health = ServiceHealth(ok=False, detail="not started")
        self._failing_since: float | None = None  # monotonic time of the first failure of a run of them
        self._counted = (0, 0)  # published and duplicates before the current window
        self.published = 0  # events stored in the stream by this relay
        self.duplicates = 0  # events the stream already held (dropped by their Msg-Id)

    # -- the Service contract --------------------------------------------------------------------

    async def start(self, context: ServiceContext) -> None:
        """Connect to NATS and create or update the stream.

        Raises:
            ConfigError: NATS cannot be reached or refuses the stream, in a client engine; a server
                logs it and keeps trying in `run`.
        """
        self._store = context.store
        self._serving = context.serving
        try:
            await self._open()
        except ConfigError as exc:
            if not self._serving:
                raise
            log.warning("event relay: %s; retrying", exc)
            self._health = ServiceHealth(ok=False, detail=f"{exc}; retrying")
        else:
            self._health = ServiceHealth(ok=True, detail=f"connected to {self.url}; waiting for the lease {self.lease}")

    async def run(self) -> None:
        """Publish the log while holding the lease; stand by otherwise; retry failures with back-off."""
        store = self._require_store()
        delay = _MIN_RETRY
        while True:
            try:
                if self._nc is None:
                    await self._open()
                if not await store.claim(self.lease):
                    self._health = ServiceHealth(ok=True, detail=f"standing by: another relay holds {self.lease}")
                    await anyio.sleep(self.lease_poll)
                    continue
                await self._relay(store)
                delay = _MIN_RETRY
            except (ConfigError, StoreUnavailable, _AckMissing, OSError, TimeoutError) as exc:
                await self._fail(exc, delay)
                delay = min(delay * 2, _MAX_RETRY)
            except Exception as exc:
                if not _is_nats_error(exc):
                    raise
                await self._fail(exc, delay)
                delay = min(delay * 2, _MAX_RETRY)

    async def stop(self) -> None:
        """Wait (up to ``ack_timeout``) for the acks in flight, record them in the cursor, release
        the lease and disconnect."""
        store, acks = self._store, self._acks
        if store is not None and acks is not None and self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):  # what is not recorded is published again by the next relay
                with anyio.fail_after(self.ack_timeout):
                    await self._drain(acks)
        if store is not None:
            with contextlib.suppress(Exception):
                await self._record(store)
            with contextlib.suppress(Exception):
                await store.release(self.lease)
        await self._close()
        if acks is not None:
            log.info("event relay: stopped at seq %d; the lease %s is released", acks.acked, self.lease)
        self._health = ServiceHealth(ok=False, detail="stopped")

    def health(self) -> ServiceHealth:
        """Connected and publishing (or standing by), or what is wrong."""
        return self._health

    # -- publishing ------------------------------------------------------------------------------

    async def _relay(self, store: EventStore) -> None:
        """Publish from the cursor until the lease is lost (returns) or something fails (raises)."""
        position = await store.read_cursor(self.lease)
        acks = self._acks = AckWindow(position, is_duplicate=lambda ack: bool(ack.duplicate))
        self._counted = (self.published, self.duplicates)  # the window counts from zero
        self._written = position
        following = position
        if self._failing_since is not None:
            log.info("event relay: back after %.1f s of failures", time.monotonic() - self._failing_since)
            self._failing_since = None
        log.info("event relay: publishing to %s from seq %d", self.stream, position)
        self._health = ServiceHealth(ok=True, detail=f"publishing to {self.stream} at {self.url} from seq {position}")
        while True:
            if not await store.claim(self.lease):
                await self._drain(acks)
                await self._record(store)
                log.info("event relay: lost the lease %s; standing by", self.lease)
                return
            try:
                page = await store.read_all(following, self.batch)
            except CorruptEvent as exc:
                if exc.seq is None:
                    raise
                # it can never be read (its execution is quarantined): stopping here would stop the
                # whole stream, so move past it, in order with the publishes before it
                log.error("event relay: skipping the event at seq %d, which can never be read: %s", exc.seq, exc)
                acks.skip(exc.seq)
                following = exc.seq
                continue
            if page:
                for item in page:
                    await self._publish(item, acks)
                following = page[-1].seq
                await self._record(store, busy=True)
                continue
            # caught up: settle what is in flight, then wait for the next commit
            await self._drain(acks)
            await self._record(store)
            self._health = ServiceHealth(
                ok=True,
                detail=f"publishing to {self.stream} at {self.url}: {self.published} published, "
                f"{self.duplicates} duplicates dropped, cursor {acks.acked}",
            )
            await store.wait_for_changes(timeout=self.poll)

    async def _publish(self, item: GlobalEvent, acks: AckWindow) -> None:
        while len(acks) >= self.window:
            await self._settle_head(acks)
        event = item.event
        ack = await self._js.publish_async(
            await self._subject(event),
            encode_event_json(event),
            headers={"Nats-Msg-Id": msg_id(event.execution_id, event.version)},
        )
        acks.add(item.seq, ack)
        self._count(acks)

    async def _settle_head(self, acks: AckWindow) -> None:
        """Wait for the oldest ack in flight and move past what came back.

        Raises:
            _AckMissing: it did not come within ``ack_timeout`` (or the connection closed).
            Exception: the publish failed (its error).
        """
        head = acks.head()
        if head is None:
            return
        with anyio.move_on_after(self.ack_timeout):
            # a closed connection never completes its acks: look at it every so often
            while not head.done() and not self._nc.is_closed:
                await asyncio.wait([head], timeout=0.25)
        if not head.done():
            raise _AckMissing(acks.head_seq() or 0, self.ack_timeout)
        self._count(acks)

    async def _drain(self, acks: AckWindow) -> None:
        while len(acks):
            await self._settle_head(acks)

    def _count(self, acks: AckWindow) -> None:
        acks.reap()
        self.published = self._counted[0] + acks.published
        self.duplicates = self._counted[1] + acks.duplicates

    async def _record(self, store: EventStore, *, busy: bool = False) -> None:
        """Write the acked position to the cursor; while ``busy`` (more pages to come) at most every
        ``cursor_interval`` seconds, since each write is a round trip to the store."""
        acks = self._acks
        if acks is None or acks.acked <= self._written:
            return
        now = self._clock()
        if busy and now - self._written_at < self.cursor_interval:
            return
        await store.write_cursor(self.lease, acks.acked)
        self._written, self._written_at = acks.acked, now

    async def _subject(self, event: AnyEvent) -> str:
        """The execution's subject; its project and domain come from its ExecutionCreated, or from
        the store for an execution first seen later (a relay that resumed mid-way)."""
        subject = self._subjects.get(event.execution_id)
        if subject is None:
            if isinstance(event, ExecutionCreated):
                project, domain = event.project, event.domain
            else:
                summary = await self._require_store().get_summary(event.execution_id)
                project, domain = (summary.project, summary.domain) if summary is not None else ("", "")
            subject = event_subject(project, domain, event.execution_id, self.prefix)
            if len(self._subjects) >= _SUBJECT_CACHE:
                del self._subjects[next(iter(self._subjects))]
            self._subjects[event.execution_id] = subject
        return subject

    # -- connection --------------------------------------------------------------------------------

    async def _open(self) -> None:
        """Connect and create or update the stream.

        Raises:
            ConfigError: NATS cannot be reached, or refuses the stream's configuration.
        """
        from nats.js import api
        from nats.js.errors import Error as JetStreamError
        from nats.js.errors import NotFoundError

        nc = await connect(self.url, "publish events", connect_timeout=self.connect_timeout, reconnect=False)
        try:
            js = nc.jetstream(publish_async_max_pending=max(self.window, 1))
            config = api.StreamConfig(
                name=self.stream,
                subjects=[f"{self.prefix}.>"],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                duplicate_window=self.duplicate_window,
                max_age=self.max_age,
            )
            try:
                info = await js.stream_info(self.stream)
            except NotFoundError:
                await js.add_stream(config)
            else:
                current = info.config
                if (
                    current.subjects != config.subjects
                    or current.duplicate_window != config.duplicate_window
                    or (current.max_age or 0.0) != config.max_age
                ):
                    await js.update_stream(config)
        except JetStreamError as exc:
            await nc.close()
            raise ConfigError(
                f"NATS at {self.url!r} refused the stream {self.stream!r} (subjects {self.prefix}.>): {exc}; "
                "use another stream name or subject prefix, or fix the existing stream"
            ) from exc
        except BaseException:
            await nc.close()
            raise
        self._nc, self._js = nc, js

    async def _close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if self._acks is not None:
            self._acks.abandon(ConnectionError("the relay's NATS connection was closed"))
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _fail(self, exc: BaseException, delay: float) -> None:
        """Drop the connection (its buffered publishes must not arrive after the ones sent again),
        record what was acked, report, and wait before the next attempt."""
        # one warning per outage, not one per try (an hour of NATS down is not 700 lines)
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("event relay: %s: %s; retrying until it publishes again", type(exc).__name__, exc)
        else:
            log.debug("event relay: %s: %s; retrying in %.1fs", type(exc).__name__, exc, delay)
        self._health = ServiceHealth(ok=False, detail=f"{type(exc).__name__}: {exc}; retrying")
        await self._close()
        if self._store is not None:
            with contextlib.suppress(Exception):
                await self._record(self._store)
        await anyio.sleep(delay)

    def _require_store(self) -> EventStore:
        if self._store is None:
            raise ConfigError("the relay is not started: an engine starts it (Engine(..., nats=URL))")
        return self._store


def _is_nats_error(exc: BaseException) -> bool:
    from nats.errors import Error as NatsError

    return isinstance(exc, NatsError)
