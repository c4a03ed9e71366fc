"""Time, injected: the `Clock` protocol, the real `MonotonicClock` and the `FakeClock` test double.

The control loop never reads the time or sleeps directly; it asks a `Clock`, so that tests step time
by hand instead of sleeping (STYLE rules 3 and 21). Times are monotonic seconds (a float, origin
unspecified), the same scale as `time.monotonic()`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "MonotonicClock"]


@runtime_checkable
class Clock(Protocol):
    """A monotonic time source that can wait for a deadline.

    Contract: ``now()`` never goes backwards. ``sleep_until(deadline)`` returns once
    ``now() >= deadline`` (at once if it already is) and may be cancelled.
    """

    def now(self) -> float:
        """Current monotonic time in seconds."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Wait until ``now() >= deadline``."""
        ...


class MonotonicClock:
    """The real clock: `time.monotonic` and `asyncio.sleep`."""

    def now(self) -> float:
        """Current monotonic time in seconds.

        Returns:
            ``time.monotonic()``.
        """
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` (monotonic seconds); return at once if it has passed.

        Args:
            deadline: the monotonic time to wake at.
        """
        # asyncio's timer may fire a hair early relative to time.monotonic(); loop until it has
        # really passed so that callers can rely on `now() >= deadline` afterwards.
        while (remaining := deadline - time.monotonic()) > 0:  # noqa: ASYNC110 - this is the sleep primitive
            await asyncio.sleep(remaining)


class FakeClock:
    """A clock that moves only when a test calls `advance`.

    Sleepers whose deadline is reached are woken (their futures resolved) during ``advance``; they
    run at the event loop's next iterations, so a test yields (``await asyncio.sleep(0)``) or awaits
    the thing it expects rather than sleeping for real time.

    Args:
        start: the initial value of ``now()``.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        # (deadline, seq, future); seq keeps equal deadlines in sleep order and avoids comparing futures
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        """Current fake time in seconds.

        Returns:
            The start value plus everything passed to `advance` so far.
        """
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        """Wait until the fake time reaches ``deadline``.

        Args:
            deadline: the fake time to wake at.
        """
        if deadline <= self._now:
            # still yield, as a real sleep would, so a loop around sleep_until cannot starve others
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline is now reached.

        Args:
            seconds: how far to move; must not be negative.

        Raises:
            ValueError: if ``seconds`` is negative (monotonic time never goes back).
        """
        if seconds < 0:
            raise ValueError(f"FakeClock.advance({seconds}): time is monotonic, advance by >= 0 seconds")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():  # a cancelled sleeper left its future behind
                future.set_result(None)

    @property
    def sleepers(self) -> int:
        """How many coroutines are waiting in `sleep_until` (cancelled ones excluded)."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    @property
    def next_deadline(self) -> float | None:
        """The earliest deadline anyone waits for, or ``None`` if nobody sleeps."""
        pending = [deadline for deadline, _, future in self._sleepers if not future.done()]
        return min(pending, default=None)
