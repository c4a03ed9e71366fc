"""Riding out a store outage (a Postgres restart or failover) instead of failing or flooding the log.

`Reachability` turns a stream of failed and successful calls into one log line when a backend is
lost and one when it is back; `ride_out` retries an idempotent read through an outage of bounded
length, so that a client waiting on an execution (``handle.wait``, ``handle.outputs``, ``slipstream
run``) sees a restart as a pause, not an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from engine.errors import StoreUnavailable

__all__ = ["OUTAGE_GRACE", "Reachability", "ride_out"]

T = TypeVar("T")

# How long a client read waits for the store to come back before it raises: a restart takes
# seconds, a failover tens of seconds; an outage longer than this is one to hear about.
OUTAGE_GRACE = 60.0
_FIRST_PAUSE = 0.05
_LONGEST_PAUSE = 1.0


class Reachability:
    """Whether a backend answers, logged once per change of state (not once per retry).

    Call `lost` after every failure that means "unreachable" and `back` after every success: the
    first `lost` logs ``lost <what> (<reason>); retrying until it is back``, the first `back` after it
    ``<what> back after <N> s``. Both are warnings, so that the pair shows together wherever the
    loss shows (a process without logging set up prints warnings only).

    Args:
        what: the backend as the lines name it, e.g. ``Postgres at postgresql://app@db/prod``.
        logger: where the lines go.
        clock: monotonic seconds (injected by tests).
    """

    def __init__(self, what: str, logger: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self._log = logger
        self._clock = clock
        self._lost_at: float | None = None

    def lost(self, reason: str) -> None:
        """Note a failure to reach the backend (logged only when it was up until now)."""
        if self._lost_at is None:
            self._lost_at = self._clock()
            self._log.warning("lost %s (%s); retrying until it is back", self.what, reason)

    def back(self) -> None:
        """Note a success (logged only when the backend was down until now)."""
        if self._lost_at is not None:
            took, self._lost_at = self._clock() - self._lost_at, None
            self._log.warning("%s back after %.1f s", self.what, took)


async def ride_out(
    call: Callable[[], Awaitable[T]], *, grace: float = OUTAGE_GRACE, clock: Callable[[], float] = time.monotonic
) -> T:
    """Await ``call()``; while it raises `StoreUnavailable`, call it again (pauses growing from
    50 ms to 1 s) for up to ``grace`` seconds. Only for calls that are safe to repeat (reads).

    Raises:
        StoreUnavailable: the store was still unreachable after ``grace`` seconds (the message
            says for how long it was tried).
    """
    started: float | None = None
    pause = _FIRST_PAUSE
    while True:
        try:
            return await call()
        except StoreUnavailable as exc:
            now = clock()
            started = now if started is None else started
            if now - started >= grace:
                raise StoreUnavailable(f"{exc} (still unreachable after {now - started:.0f} s of retries)") from exc
        await anyio.sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE)
