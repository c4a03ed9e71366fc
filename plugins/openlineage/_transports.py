"""Where RunEvents go: the openlineage-python client's transports, and one of ours for NATS.

`client_for(spec)` builds an ``OpenLineageClient`` from a short spec (what ``--transport`` and the
``openlineage`` event sink take):

==============================  ====================================================================
``None``                        the client's own configuration: ``openlineage.yml`` (or the file
                                named by ``OPENLINEAGE_CONFIG``), ``OPENLINEAGE__TRANSPORT__*`` and
                                ``OPENLINEAGE_URL``; ``type: nats`` works there too
``console``                     the client's console transport (log records of logger
                                ``openlineage.client.transport.console``)
``file:PATH``                   one JSON RunEvent per line, appended to PATH
``http://...``, ``https://...``  the HTTP transport (``POST <url>/api/v1/lineage``; Marquez and
                                other lineage servers)
``kafka://BROKERS/TOPIC``       the Kafka transport (needs ``confluent-kafka``)
``nats://HOST:PORT/SUBJECT``    `NatsTransport`: publishes each RunEvent's JSON to SUBJECT
                                (default ``slipstream.lineage``)
==============================  ====================================================================

No OpenLineage transport speaks NATS, so `NatsTransport` is ours. The client's transports are
synchronous, while nats-py is asyncio: the transport runs its connection on an event loop of its
own, in a daemon thread, and ``emit`` waits for the publish (and a flush, or JetStream's ack).
Each message has the header ``Nats-Msg-Id: <runId>:<eventType>``, so that a JetStream stream
capturing the subject drops the copies a restarted consumer emits again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from openlineage.client.client import OpenLineageClient
from openlineage.client.serde import Serde
from openlineage.client.transport import DefaultTransportFactory, get_default_factory
from openlineage.client.transport.transport import Config, Transport

from engine.errors import ConfigError

__all__ = ["DEFAULT_SUBJECT", "NatsConfig", "NatsTransport", "client_for", "transport_factory"]

DEFAULT_SUBJECT = "slipstream.lineage"

_FORMS = (
    "console, file:PATH, http(s)://HOST[:PORT][/PATH], kafka://BROKERS/TOPIC, nats://HOST:PORT[/SUBJECT], "
    "or nothing for the OpenLineage client's own configuration"
)


@dataclass
class NatsConfig(Config):
    """Settings of `NatsTransport` (``type: nats`` in ``openlineage.yml``).

    Attributes:
        url: the NATS server.
        subject: where RunEvents are published.
        jetstream: publish through JetStream and wait for its ack (a stream must capture the
            subject); else a plain publish, flushed.
        timeout: seconds to wait for the connection, the flush or the ack.
    """

    url: str = "nats://127.0.0.1:4222"
    subject: str = DEFAULT_SUBJECT
    jetstream: bool = False
    timeout: float = 5.0

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> NatsConfig:
        jetstream = params.get("jetstream", False)
        if isinstance(jetstream, str):
            jetstream = jetstream.strip().lower() in ("1", "true", "yes")
        return cls(
            url=str(params.get("url", cls.url)),
            subject=str(params.get("subject", cls.subject)),
            jetstream=bool(jetstream),
            timeout=float(params.get("timeout", cls.timeout)),
        )


class NatsTransport(Transport):
    """An OpenLineage transport that publishes each RunEvent's JSON to a NATS subject."""

    kind = "nats"
    config_class = NatsConfig

    def __init__(self, config: NatsConfig) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openlineage-nats", daemon=True)
        self._thread.start()
        self._nc: Any = None
        self._js: Any = None

    def emit(self, event: Any) -> None:
        """Publish ``event`` and wait until the server has it.

        Raises:
            ConfigError: NATS cannot be reached, or (with ``jetstream``) no stream captures the subject.
        """
        data = Serde.to_json(event).encode()
        run = getattr(event, "run", None)
        state = getattr(getattr(event, "eventType", None), "value", "")
        headers = {"Nats-Msg-Id": f"{run.runId}:{state}"} if run is not None else None
        future = asyncio.run_coroutine_threadsafe(self._publish(data, headers), self._loop)
        future.result(timeout=3 * self.config.timeout)

    async def _publish(self, data: bytes, headers: dict[str, str] | None) -> None:
        import nats

        if self._nc is None or self._nc.is_closed:
            try:
                self._nc = await nats.connect(
                    self.config.url, connect_timeout=self.config.timeout, max_reconnect_attempts=-1
                )
            except Exception as exc:
                raise ConfigError(
                    f"cannot reach NATS at {self.config.url!r} for OpenLineage events ({type(exc).__name__}: "
                    f"{exc}); start the server or fix the transport's url"
                ) from exc
            self._js = self._nc.jetstream()
        if self.config.jetstream:
            try:
                await self._js.publish(self.config.subject, data, headers=headers, timeout=self.config.timeout)
            except Exception as exc:
                raise ConfigError(
                    f"JetStream did not take the OpenLineage event on {self.config.subject!r} at {self.config.url!r} "
                    f"({type(exc).__name__}: {exc}); add a stream capturing the subject, or set jetstream: false"
                ) from exc
        else:
            await self._nc.publish(self.config.subject, data, headers=headers)
            await self._nc.flush(timeout=self.config.timeout)

    def close(self, timeout: float = -1) -> bool:
        """Drain the connection and stop the transport's thread."""

        async def shut() -> None:
            if self._nc is not None and not self._nc.is_closed:
                with contextlib.suppress(Exception):
                    await self._nc.drain()

        if not self._loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(shut(), self._loop)
            with contextlib.suppress(Exception):
                future.result(timeout=None if timeout < 0 else timeout or None)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
        return True


def transport_factory() -> DefaultTransportFactory:
    """The client's transport factory with ours added (a copy: the client's own is left alone)."""
    factory = DefaultTransportFactory()
    for kind, cls in get_default_factory().transports.items():
        factory.register_transport(kind, cls)
    factory.register_transport(NatsTransport.kind, NatsTransport)
    return factory


def transport_config(spec: str) -> dict[str, Any]:
    """The transport configuration (``type`` and settings) a short spec stands for.

    Raises:
        ConfigError: a spec of no known form.
    """
    spec = spec.strip()
    if spec == "console":
        return {"type": "console"}
    if spec.startswith("file:"):
        path = spec.removeprefix("file:")
        path = path.removeprefix("//") if path.startswith("///") else path
        if not path:
            raise ConfigError(f"transport {spec!r} names no file: write file:PATH")
        return {"type": "file", "log_file_path": path, "append": True}
    parts = urlsplit(spec)
    if parts.scheme in ("http", "https") and parts.netloc:
        return {"type": "http", "url": spec}
    if parts.scheme == "kafka" and parts.netloc and parts.path.strip("/"):
        return {"type": "kafka", "topic": parts.path.strip("/"), "config": {"bootstrap.servers": parts.netloc}}
    if parts.scheme in ("nats", "tls") and parts.netloc:
        subject = parts.path.strip("/") or DEFAULT_SUBJECT
        return {"type": "nats", "url": f"{parts.scheme}://{parts.netloc}", "subject": subject}
    raise ConfigError(f"OpenLineage transport {spec!r} is not one of: {_FORMS}")


def client_for(spec: str | None) -> OpenLineageClient:
    """An OpenLineage client sending through the transport ``spec`` names (see the module).

    Raises:
        ConfigError: an unknown spec, or a transport that cannot be built (a missing library).
    """
    factory = transport_factory()
    if spec is None:
        return OpenLineageClient(factory=factory)
    config = transport_config(spec)
    try:
        transport = factory.create(dict(config))
    except (ImportError, RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"OpenLineage transport {spec!r} ({config['type']}) cannot be built: {type(exc).__name__}: {exc}"
        ) from exc
    return OpenLineageClient(transport=transport)
