"""The event stream on NATS JetStream (DESIGN section 10).

- `NatsRelay`: the transactional-outbox relay, a `Service` (entry point ``nats`` in
  ``slipstream.event_sinks``) that publishes every committed event to
  ``slipstream.events.<project>.<domain>.<execution_id>`` with ``Nats-Msg-Id: <execution_id>:<version>``.
- `NatsEventSource`: the JetStream pull consumer behind `Engine.subscribe` when the engine has ``nats=``.
- `event_subject`, `filter_subject`, `msg_id`: the naming both sides agree on.

nats-py is imported when a connection is opened, not when this package is.
"""

from __future__ import annotations

from plugins.nats._outbox import DEFAULT_STREAM, SUBJECT_PREFIX, event_subject, msg_id
from plugins.nats.relay import NatsRelay, relay_cursor
from plugins.nats.subscribe import NatsEventSource, filter_subject

__all__ = [
    "DEFAULT_STREAM",
    "SUBJECT_PREFIX",
    "NatsEventSource",
    "NatsRelay",
    "event_subject",
    "filter_subject",
    "msg_id",
    "relay_cursor",
]
