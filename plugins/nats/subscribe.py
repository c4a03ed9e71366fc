"""Subscriptions on the event stream: a JetStream pull consumer on the relay's subjects (DESIGN 10).

`NatsEventSource` is the source behind `Engine.subscribe` when the engine has a ``nats`` URL: the
relay publishes each committed event as JSON to ``slipstream.events.<project>.<domain>.<execution>``
on the stream ``SLIPSTREAM``; this module reads them back as the same typed `engine.events` classes.

- The project, domain and execution filters become the consumer's filter subject (wildcards for
  the ones not given), so the server does the filtering.
- A durable subscription is a durable consumer of that name (``AckAll``: an ack covers every
  earlier message, as `Engine.subscribe` promises); it is created at the first subscription,
  delivering the whole stream, and found again afterwards (its filter updated if it changed).
  Messages delivered but not acked when the subscription closes are handed back (``nak``) so that
  the next subscription gets them at once; after a crash they come back after ``ack_wait``.
- A non-durable subscription is an ephemeral consumer (no acks) from the end of the stream, or
  from its start with ``from_start``; the server deletes it once unused (``inactive_threshold``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from engine.errors import ConfigError
from engine.events import AnyEvent, decode_event_json
from plugins.nats._connect import connect
from plugins.nats._outbox import DEFAULT_STREAM, SUBJECT_PREFIX

__all__ = ["DEFAULT_STREAM", "SUBJECT_PREFIX", "NatsEventSource", "filter_subject"]


def filter_subject(
    project: str | None = None,
    domain: str | None = None,
    execution_id: str | None = None,
    prefix: str = SUBJECT_PREFIX,
) -> str:
    """The subject that matches the events of these executions (``*`` for what is not given).

    Raises:
        ConfigError: a value that cannot be one subject token (empty, or holding ``.``, ``*``,
            ``>`` or white space).
    """
    tokens = []
    for what, value in (("project", project), ("domain", domain), ("execution_id", execution_id)):
        if value is None:
            tokens.append("*")
            continue
        if not value or any(c in value for c in ".*> \t\r\n"):
            raise ConfigError(
                f"{what}={value!r} cannot be matched on the event stream: NATS subject tokens cannot be "
                "empty or hold '.', '*', '>' or white space"
            )
        tokens.append(value)
    return ".".join([prefix, *tokens])


class NatsEventSource:
    """Events of the JetStream stream the relay writes, for `engine._subscribe.Subscription`.

    Args:
        url: the NATS server (``nats://host:4222``).
        durable: the durable consumer's name (None: an ephemeral consumer).
        from_start: an ephemeral consumer starts at the beginning of the stream.
        project, domain, execution_id: only these executions' events.
        stream: the relay's stream.
        prefix: the relay's subject prefix.
        batch: messages asked for per fetch.
        poll: the longest wait of one fetch, in seconds.
        ack_wait: seconds after which a message delivered to a durable subscriber and not acked is
            delivered again (to whoever subscribes under that name).
        connect_timeout: seconds to wait for the server when opening.
    """

    def __init__(
        self,
        url: str,
        *,
        durable: str | None = None,
        from_start: bool = False,
        project: str | None = None,
        domain: str | None = None,
        execution_id: str | None = None,
        stream: str = DEFAULT_STREAM,
        prefix: str = SUBJECT_PREFIX,
        batch: int = 256,
        poll: float = 1.0,
        ack_wait: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if durable is not None and any(c in durable for c in ".*> \t\r\n"):
            raise ConfigError(f"durable={durable!r} cannot name a JetStream consumer: use letters, digits, '-' and '_'")
        self.url = url
        self.durable = durable
        self.from_start = from_start
        self.subject = filter_subject(project, domain, execution_id, prefix)
        self.stream = stream
        self.batch = batch
        self.poll = poll
        self.ack_wait = ack_wait
        self.connect_timeout = connect_timeout
        self._nc: Any = None
        self._sub: Any = None
        self._unacked: dict[int, Any] = {}  # stream sequence -> message, for acks and hand-backs

    async def open(self) -> None:
        """Connect, check the stream exists, and create or find the consumer.

        Raises:
            ConfigError: NATS cannot be reached, or no stream named ``stream`` exists (no relay ran).
        """
        from nats.js import api
        from nats.js.errors import NotFoundError

        self._nc = await connect(self.url, "subscribe to events", connect_timeout=self.connect_timeout)
        try:
            js = self._nc.jetstream()
            try:
                await js.stream_info(self.stream)
            except NotFoundError:
                raise ConfigError(
                    f"NATS at {self.url!r} has no JetStream stream {self.stream!r}: no relay has published "
                    "there yet; run `slipstream serve --nats URL` (or an engine with nats=URL) first"
                ) from None
            if self.durable is None:
                config = api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.ALL if self.from_start else api.DeliverPolicy.NEW,
                    ack_policy=api.AckPolicy.NONE,
                    inactive_threshold=max(30.0, 5 * self.poll),
                )
                self._sub = await js.pull_subscribe(self.subject, stream=self.stream, config=config)
            else:
                await self._update_filter(js)
                config = api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.ALL,
                    ack_policy=api.AckPolicy.ALL,
                    ack_wait=self.ack_wait,
                    max_ack_pending=-1,
                )
                self._sub = await js.pull_subscribe(
                    self.subject, durable=self.durable, stream=self.stream, config=config
                )
        except BaseException:
            await self.close()
            raise

    async def _update_filter(self, js: Any) -> None:
        """Point an existing durable consumer at this subscription's filter (a no-op when new)."""
        from nats.js.errors import NotFoundError

        try:
            info = await js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            return
        if info.config.filter_subject != self.subject:
            info.config.filter_subject = self.subject
            await js.add_consumer(self.stream, config=info.config)

    async def fetch(self) -> tuple[list[tuple[int, AnyEvent]], int]:
        """The next messages as ``(stream sequence, event)``, and the last sequence (0: none came
        within ``poll`` seconds)."""
        from nats.errors import TimeoutError as NatsTimeout

        try:
            messages = await self._sub.fetch(self.batch, timeout=self.poll)
        except (NatsTimeout, TimeoutError):
            return [], 0
        items: list[tuple[int, AnyEvent]] = []
        for message in messages:
            sequence = message.metadata.sequence.stream
            if self.durable is not None:
                self._unacked[sequence] = message
            items.append((sequence, decode_event_json(message.data)))
        return items, items[-1][0] if items else 0

    async def commit(self, position: int) -> None:
        """Ack the message at ``position``: with ``AckAll`` that covers every earlier one."""
        if self.durable is None:
            return
        message = self._unacked.pop(position, None)
        for sequence in [s for s in self._unacked if s < position]:
            del self._unacked[sequence]
        if message is not None:
            await message.ack()

    async def close(self) -> None:
        """Hand back what was delivered and not acked, unsubscribe (a durable consumer stays) and
        disconnect."""
        nc, self._nc = self._nc, None
        sub, self._sub = self._sub, None
        unacked, self._unacked = self._unacked, {}
        if nc is None:
            return
        with contextlib.suppress(Exception):  # closing must not fail for a connection already gone
            for sequence in sorted(unacked):
                await unacked[sequence].nak()
            if sub is not None:
                await sub.unsubscribe()
            await nc.flush(timeout=2)
        with contextlib.suppress(Exception):
            await nc.close()
