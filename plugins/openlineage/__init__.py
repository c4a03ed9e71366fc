"""OpenLineage for Slipstream: node runs as OpenLineage RunEvents, emitted by an event sink.

- `OpenLineageSink`: the `Service` (entry point ``openlineage`` in ``slipstream.event_sinks``) that
  reads the event store from a durable cursor and emits through any OpenLineage transport.
- `LineageMapper`: the mapping from events to RunEvents (see ``_mapping`` for the table);
  `LineageWanted` (which node runs' COMPLETE should list datasets) and `RunLineage` (the
  artifacts one node run consumed and produced) are what its ``map(event, lineage=)`` exchanges.
- `execution_run_id` / `node_run_id`: the run ids (uuid5 in `RUN_ID_NAMESPACE`), so that a
  consumer finds the run of an execution or node without reading the events.
- `NatsTransport` / `NatsConfig`: an OpenLineage transport that publishes to NATS;
  `client_for` builds a client from a short transport spec.

Needs the ``openlineage`` extra (``pip install 'slipstream[openlineage]'``); the transports are
loaded on first use, so that importing this package does not import the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from plugins.openlineage._mapping import (
    RUN_ID_NAMESPACE,
    LineageMapper,
    LineageWanted,
    RunLineage,
    execution_run_id,
    node_run_id,
)
from plugins.openlineage._sink import OpenLineageSink

__all__ = [
    "RUN_ID_NAMESPACE",
    "LineageMapper",
    "LineageWanted",
    "NatsConfig",
    "NatsTransport",
    "OpenLineageSink",
    "RunLineage",
    "client_for",
    "execution_run_id",
    "node_run_id",
]

_LAZY = {"NatsConfig", "NatsTransport", "client_for"}

if TYPE_CHECKING:
    from plugins.openlineage._transports import NatsConfig, NatsTransport, client_for


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'plugins.openlineage' has no attribute {name!r}")
    value = getattr(importlib.import_module("plugins.openlineage._transports"), name)
    globals()[name] = value
    return value
