"""`Engine.subscribe`: the committed events of the log, typed, filtered, with acks (DESIGN section 10).

Use it like a nats-py pull consumer or a Kafka consumer::

    async with engine.subscribe(project="ml", kinds=["NodeSucceeded"], durable="audit") as sub:
        async for delivery in sub:
            handle(delivery.event)  # an engine.events class: NodeSucceeded(...)
            await delivery.ack()

Semantics, the same in both modes:

- **Order.** Events come in the order the log committed them, so each execution's events come in
  version order.
- **At least once, cumulative acks.** ``await delivery.ack()`` acknowledges that event and every
  event delivered before it on this subscription (a Kafka offset commit; JetStream ``AckAll``).
  A durable subscription opened again (after a restart, a crash) resumes right after its last ack,
  so events delivered but not acked are delivered again: make the handling idempotent, or ack
  each event once handled.
- **Durable or not.** ``durable="name"`` keeps the position under that name: in the event store
  (cursor ``subscription:<name>``) or as a JetStream durable consumer of that name. The first time,
  a durable subscription starts at the beginning of the log. A non-durable subscription starts at
  the end (only events committed from now on) unless ``from_start=True``; its acks are accepted
  and do nothing.
- **Filters.** ``project``, ``domain``, ``execution_id`` and ``kinds`` (event class names such as
  ``"NodeSucceeded"``) all apply; events filtered out are passed over, and a durable position moves
  past them once everything delivered before them is acked.

Where the events come from: without NATS (an embedded engine, or ``Engine.connect`` without
``nats=``), from the event store itself (`StoreEventSource`: ``read_all`` in commit order, woken by
``wait_for_changes``). With NATS, from a JetStream consumer on the relay's subjects
(``plugins/nats/subscribe.py``, imported only then, so that ``import engine`` never loads nats).
A source delivers the events of the wanted project, domain and execution in order; the
`Subscription` here applies the kinds, hands out `Delivery` objects and keeps the acks.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol, get_args

from engine.errors import ConfigError, CorruptEvent
from engine.events import AnyEvent, ExecutionCreated
from engine.interfaces import EventStore, GlobalEvent

__all__ = [
    "EVENT_KINDS",
    "Batch",
    "Delivery",
    "EventSource",
    "StoreEventSource",
    "Subscription",
    "cursor_name",
    "log_end",
    "open_subscription",
    "parse_kinds",
    "read_past_corrupt",
]

log = logging.getLogger("slipstream.subscribe")

# every event class name of the union, in declaration order
EVENT_KINDS: tuple[str, ...] = tuple(cls.__struct_config__.tag for cls in get_args(AnyEvent))

# executions whose project and domain a store source remembers (a bounded map, oldest dropped)
_SCOPE_CACHE = 10_000


def cursor_name(durable: str) -> str:
    """The event-store cursor of the durable subscription ``durable``."""
    return f"subscription:{durable}"


def parse_kinds(kinds: str | Iterable[str] | None) -> frozenset[str] | None:
    """The event kinds asked for (``None``: all), from names or one comma-separated string.

    Raises:
        ConfigError: a name that is no event kind (the message lists the kinds).
    """
    if kinds is None:
        return None
    names = kinds.split(",") if isinstance(kinds, str) else list(kinds)
    wanted = frozenset(name.strip() for name in names if name.strip())
    unknown = sorted(wanted - set(EVENT_KINDS))
    if unknown or not wanted:
        raise ConfigError(
            f"unknown event kind(s) {unknown or [kinds]}: subscribe to one or more of {', '.join(EVENT_KINDS)}"
        )
    return wanted


class Batch(NamedTuple):
    """What a source's ``fetch`` returns (a plain ``(items, last)`` tuple will do): events in order,
    each with its position, and the position of the last event it looked at (``last``; events it
    filtered out included; 0 when it read none), so that a durable position can move past a run of
    unwanted events."""

    items: list[tuple[int, AnyEvent]]
    last: int


class EventSource(Protocol):
    """Where a `Subscription` reads from: the event store, or a JetStream consumer.

    Contract: ``open`` once, then ``fetch`` repeatedly, then ``close`` (idempotent). ``fetch``
    returns the next events of the wanted project, domain and execution, in commit order, after
    waiting at most about ``poll`` seconds (an empty batch is allowed). ``commit(position)``
    durably records that everything up to ``position`` was handled (a no-op when not durable), and
    positions given to it only grow.
    """

    async def open(self) -> None: ...

    async def fetch(self) -> tuple[list[tuple[int, AnyEvent]], int]: ...

    async def commit(self, position: int) -> None: ...

    async def close(self) -> None: ...


class Delivery:
    """One event handed to a subscriber: ``event`` (a typed `engine.events` class), its
    ``position`` in the log (the store's global seq, or the JetStream stream sequence), and `ack`."""

    __slots__ = ("_subscription", "event", "position")

    def __init__(self, subscription: Subscription, position: int, event: AnyEvent) -> None:
        self._subscription = subscription
        self.position = position
        self.event = event

    def __repr__(self) -> str:
        event = self.event
        return f"Delivery({self.position}, {type(event).__name__} of {event.execution_id!r} v{event.version})"

    async def ack(self) -> None:
        """Acknowledge this event and every one delivered before it (idempotent; see the module)."""
        await self._subscription.ack(self.position)


class Subscription:
    """An async iterator of `Delivery`, and an async context manager that closes it.

    Built by `Engine.subscribe`; opened at ``async with`` (or at the first iteration).
    """

    def __init__(self, source: EventSource, kinds: frozenset[str] | None = None) -> None:
        self._source = source
        self._kinds = kinds
        self._buffer: list[tuple[int, AnyEvent]] = []
        self._opened = False
        self._closed = False
        self._delivered = 0  # the position of the last event handed out
        self._acked = 0  # the highest position committed (or that nothing before needs committing)

    async def open(self) -> Subscription:
        """Open the source (connect, create the consumer, find the starting position)."""
        if self._closed:
            raise ConfigError("this subscription is closed: call engine.subscribe(...) again for a new one")
        if not self._opened:
            await self._source.open()
            self._opened = True
        return self

    async def close(self) -> None:
        """Release the source; un-acked deliveries of a durable subscription come again next time."""
        if self._closed:
            return
        self._closed = True
        if self._opened:
            await self._source.close()

    async def __aenter__(self) -> Subscription:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delivery:
        await self.open()
        while not self._buffer:
            items, last = await self._source.fetch()
            self._buffer = [(pos, ev) for pos, ev in items if self._kinds is None or _kind(ev) in self._kinds]
            if not self._buffer and last > self._acked and self._delivered <= self._acked:
                # nothing handed out is waiting for its ack: the unwanted events need no handling
                await self._commit(last)
        position, event = self._buffer.pop(0)
        self._delivered = position
        return Delivery(self, position, event)

    async def ack(self, position: int) -> None:
        """Acknowledge everything delivered up to ``position`` (what `Delivery.ack` calls)."""
        if position > self._delivered:
            raise ValueError(f"cannot ack position {position}: only up to {self._delivered} was delivered")
        if position > self._acked:
            await self._commit(position)

    async def _commit(self, position: int) -> None:
        await self._source.commit(position)
        self._acked = position


def _kind(event: AnyEvent) -> str:
    return type(event).__struct_config__.tag  # type: ignore[return-value]


# -- the event store as a source ---------------------------------------------------------------------


async def log_end(store: EventStore) -> int:
    """The position (seq) of the last committed event, 0 for an empty log.

    Found with one-row reads, galloping then bisecting, so O(log n) of them: the store keeps no
    "last seq" of its own, and reading the whole log to find its end would cost O(n).
    """
    first = await _next_position(store, 0)
    if first is None:
        return 0
    low, step = first, 1  # an event is at `low`
    while True:  # gallop until a probe finds nothing after it
        ahead = await _next_position(store, low + step)
        if ahead is None:
            high = low + step
            break
        low, step = ahead, step * 2
    # the end is the smallest x in [low, high] with no event after it
    while low < high:
        middle = (low + high) // 2
        ahead = await _next_position(store, middle)
        if ahead is not None:
            low = ahead
        else:
            high = middle
    return low


async def _next_position(store: EventStore, after: int) -> int | None:
    """The seq of the first committed event after ``after``, corrupt or not (None: none)."""
    try:
        page = await store.read_all(after, 1)
    except CorruptEvent as exc:
        if exc.seq is None:
            raise
        return exc.seq
    return page[0].seq if page else None


async def read_past_corrupt(store: EventStore, after: int, limit: int) -> tuple[list[GlobalEvent], int]:
    """A page of ``read_all`` and the position it reaches; an event whose payload is corrupt is
    moved past with one error line (it can never be read, and its execution is quarantined:
    stopping there would stop the whole stream)."""
    try:
        page = await store.read_all(after, limit)
    except CorruptEvent as exc:
        if exc.seq is None:
            raise
        log.error("subscription: skipping the event at seq %d, which can never be read: %s", exc.seq, exc)
        return [], exc.seq
    return page, page[-1].seq if page else after


class StoreEventSource:
    """Events from the event store: ``read_all`` in commit order, woken by ``wait_for_changes``.

    Args:
        store: a started event store.
        durable: keep the position in the store's cursor ``subscription:<durable>``.
        from_start: a non-durable subscription starts at the beginning instead of the end.
        project, domain, execution_id: only these executions' events.
        batch: events read per query.
        poll: the longest wait for a change before reading again.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        durable: str | None = None,
        from_start: bool = False,
        project: str | None = None,
        domain: str | None = None,
        execution_id: str | None = None,
        batch: int = 500,
        poll: float = 1.0,
    ) -> None:
        self._store = store
        self._durable = durable
        self._from_start = from_start
        self._project = project
        self._domain = domain
        self._execution_id = execution_id
        self._batch = batch
        self._poll = poll
        self._position = 0
        self._scopes: dict[str, tuple[str, str]] = {}  # execution id -> (project, domain)

    async def open(self) -> None:
        if self._durable is not None:
            self._position = await self._store.read_cursor(cursor_name(self._durable))
        elif not self._from_start:
            self._position = await log_end(self._store)

    async def fetch(self) -> Batch:
        page, position = await read_past_corrupt(self._store, self._position, self._batch)
        if position == self._position:
            await self._store.wait_for_changes(timeout=self._poll)
            page, position = await read_past_corrupt(self._store, self._position, self._batch)
            if position == self._position:
                return Batch([], 0)
        self._position = position
        items = [(item.seq, item.event) for item in page if await self._wanted(item.event)]
        return Batch(items, self._position)

    async def commit(self, position: int) -> None:
        if self._durable is not None:
            await self._store.write_cursor(cursor_name(self._durable), position)

    async def close(self) -> None:
        self._scopes.clear()

    async def _wanted(self, event: AnyEvent) -> bool:
        if self._execution_id is not None and event.execution_id != self._execution_id:
            return False
        if self._project is None and self._domain is None:
            return True
        project, domain = await self._scope(event)
        return (self._project is None or project == self._project) and (self._domain is None or domain == self._domain)

    async def _scope(self, event: AnyEvent) -> tuple[str, str]:
        scope = self._scopes.get(event.execution_id)
        if scope is None:
            if isinstance(event, ExecutionCreated):
                scope = (event.project, event.domain)
            else:
                summary = await self._store.get_summary(event.execution_id)
                scope = (summary.project, summary.domain) if summary is not None else ("", "")
            if len(self._scopes) >= _SCOPE_CACHE:
                del self._scopes[next(iter(self._scopes))]
            self._scopes[event.execution_id] = scope
        return scope


# -- choosing the source -------------------------------------------------------------------------------


def open_subscription(
    store: EventStore | None,
    nats_url: str | None,
    *,
    project: str | None = None,
    domain: str | None = None,
    execution_id: str | None = None,
    kinds: str | Sequence[str] | None = None,
    durable: str | None = None,
    from_start: bool = False,
    nats_options: dict[str, Any] | None = None,
) -> Subscription:
    """A `Subscription` on the store, or on JetStream at ``nats_url`` when one is given (then
    ``store`` may be None).

    Raises:
        ConfigError: unknown kinds, an empty durable name, ``from_start`` with ``durable``, or (with
            NATS) a backend that is not installed.
    """
    wanted = parse_kinds(kinds)
    if durable is not None and not durable.strip():
        raise ConfigError("durable= names the subscription's position: give a non-empty name, or None")
    if durable is not None and from_start:
        raise ConfigError(
            f"from_start=True does not apply to the durable subscription {durable!r}: a durable subscription "
            "starts at the beginning of the log the first time and resumes after its last ack afterwards; "
            "drop from_start, or drop durable= to read the whole log once"
        )
    filters = {"project": project, "domain": domain, "execution_id": execution_id}
    if nats_url is None:
        if store is None:
            raise ConfigError("a subscription needs an event store or a NATS URL")
        return Subscription(StoreEventSource(store, durable=durable, from_start=from_start, **filters), wanted)
    try:
        module = importlib.import_module("plugins.nats.subscribe")
    except ImportError as exc:
        raise ConfigError(
            f"subscribing to the event stream at {nats_url!r} needs the NATS plugin (plugins.nats.subscribe) "
            f"and nats-py: {exc}; install slipstream with its dependencies"
        ) from exc
    source = module.NatsEventSource(nats_url, durable=durable, from_start=from_start, **filters, **(nats_options or {}))
    return Subscription(source, wanted)
