"""Opening a NATS connection: fail fast at the first attempt, with a `ConfigError` that says what to fix.

nats-py retries the *first* connection for ever unless a positive limit of attempts is set, so an
unreachable server would hang the caller. Here the first connection gets two quick attempts;
reconnection without limit is then switched on (or left off) for the connection's life.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from engine.errors import ConfigError

__all__ = ["connect"]

log = logging.getLogger("slipstream.nats")

# seconds between reconnection attempts once connected (nats-py's default)
_RECONNECT_WAIT = 2.0


async def connect(
    url: str,
    purpose: str,
    *,
    connect_timeout: float = 5.0,
    reconnect: bool = True,
    closed_cb: Callable[[], Awaitable[None]] | None = None,
) -> Any:
    """A connected ``nats.aio.client.Client``.

    Args:
        url: the server (``nats://host:4222``).
        purpose: what the connection is for, for the error message (``"publish events"``).
        connect_timeout: seconds the first attempt may take.
        reconnect: let nats-py reconnect (forever) after the connection is lost. A relay says
            no: it reconnects itself, so that publishes buffered in a lost connection never reach
            the stream after those it sends again.
        closed_cb: awaited when the connection is closed for good.

    Raises:
        ConfigError: the server cannot be reached (names the URL and the fix).
    """
    import nats

    async def error_cb(exc: Exception) -> None:
        log.debug("NATS connection to %s: %s: %s", url, type(exc).__name__, exc)

    options: dict[str, Any] = {"error_cb": error_cb}
    if closed_cb is not None:
        options["closed_cb"] = closed_cb
    try:
        nc = await nats.connect(
            url,
            connect_timeout=connect_timeout,
            allow_reconnect=False,
            # nats-py drops a server from its pool only past a positive limit: with none, it would
            # try the first connection for ever whatever allow_reconnect says
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            **options,
        )
    except Exception as exc:  # nats raises OSError, TimeoutError, NoServersError, ...
        raise ConfigError(
            f"cannot reach NATS at {url!r} to {purpose} ({type(exc).__name__}: {exc}); "
            "start the server or fix the URL (nats= or SLIPSTREAM_NATS_URL)"
        ) from exc
    # nats-py reads these options when a connection is lost, not when it is made
    nc.options.update(allow_reconnect=reconnect, max_reconnect_attempts=-1, reconnect_time_wait=_RECONNECT_WAIT)
    return nc
