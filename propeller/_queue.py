"""`WorkQueue`: client-go's rate-limited, delaying work queue, for one asyncio event loop.

Semantics follow client-go ``util/workqueue`` (``queue.go``, ``delaying_queue.go``,
``rate_limiting_queue.go``, ``default_rate_limiters.go``):

- ``dirty`` holds every item that needs processing, ``processing`` every item a worker holds,
  ``queue`` the FIFO order of dirty items that nobody processes. An item is therefore never queued
  twice, and never handed to two workers at once.
- ``add`` of an item that is being processed only marks it dirty; ``done`` then queues it again
  (once, however many adds happened meanwhile). Workers must call ``done`` for every item ``get``
  returned, also when processing failed.
- ``add_background`` queues an item behind every item added with ``add`` (controller-runtime's
  priority queue gives resyncs a low priority for the same reason): a periodic sweep that queues
  every execution does not delay the wake-ups of executions with something new. An ``add`` of an
  item waiting there moves it to the front lane. So that sweeps still progress under a steady load,
  one background item goes after every ``WorkQueue.FOREGROUND_RUN`` front ones while both wait.
- ``add_after`` parks the item in a timer heap; when the same item is parked twice, the earliest
  deadline wins. Timers are driven by an injected `Clock`.
- ``add_rate_limited`` parks the item for ``base_delay * 2**failures`` (capped at ``max_delay``),
  where ``failures`` counts its rate-limited adds since the last ``forget``. (client-go's default
  controller limiter also has an overall token bucket; this queue has only the per-item back-off.)
- After ``shutdown``, adds are ignored and timers dropped, but ``get`` still hands out what is
  queued; once the queue is empty it raises `QueueShutDown` (client-go's ``shutdown=true``).

All methods must be called from the event loop's thread: a caller on another thread (an executor's
worker) hands its add to the loop with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from engine.errors import SlipstreamError
from propeller._clock import Clock, MonotonicClock

__all__ = ["DEFAULT_BASE_DELAY", "DEFAULT_MAX_DELAY", "QueueShutDown", "WorkQueue"]

T = TypeVar("T", bound=Hashable)

# client-go's DefaultControllerRateLimiter starts at 5 ms; we cap at 60 s instead of its 1000 s so that a
# workflow whose store hiccupped for a while resumes within a minute of the store coming back.
DEFAULT_BASE_DELAY = 0.005
DEFAULT_MAX_DELAY = 60.0


class QueueShutDown(SlipstreamError):
    """The work queue was shut down and holds no more items; the worker should exit."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        label = f"work queue {name!r}" if name else "work queue"
        super().__init__(f"{label} is shut down and drained: no more items; stop the worker")


class WorkQueue(Generic[T]):
    """A deduplicating FIFO work queue with timers and per-item exponential back-off.

    Args:
        clock: time source for ``add_after``/``add_rate_limited``; `MonotonicClock` by default.
        base_delay: first back-off of ``add_rate_limited``, in seconds.
        max_delay: cap on the back-off, in seconds.
        name: shown in error messages.
    """

    # Foreground items handed out in a row, while background items wait, before one of those goes.
    FOREGROUND_RUN = 8

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        base_delay: float = DEFAULT_BASE_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        name: str = "",
    ) -> None:
        if base_delay <= 0 or max_delay < base_delay:
            raise ValueError(
                f"WorkQueue(base_delay={base_delay}, max_delay={max_delay}): need 0 < base_delay <= max_delay"
            )
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._base_delay = base_delay
        self._max_delay = max_delay
        self.name = name
        # FIFO of items ready for a worker; each is also in _dirty and never in _processing.
        self._queue: deque[T] = deque()
        # The background lane: (order, item) entries, live only while _background[item] holds that
        # order (an item moved to the front lane leaves its entry behind, skipped when reached).
        self._background_lane: deque[tuple[int, T]] = deque()
        self._background: dict[T, int] = {}
        # Items being processed that were re-added with add_background only: done() queues them there.
        self._background_after_done: set[T] = set()
        # Foreground items handed out in a row while background items waited.
        self._foreground_run = 0
        # Items that need processing (queued, or re-added while processing).
        self._dirty: set[T] = set()
        # Items a worker holds between get() and done().
        self._processing: set[T] = set()
        # Blocked get() calls; a resolved future means "look again", not "this item is yours".
        self._getters: deque[asyncio.Future[None]] = deque()
        # Timer heap with lazy deletion: an entry is live only if _deadlines[item] holds its seq.
        self._timers: list[tuple[float, int, T]] = []
        self._deadlines: dict[T, tuple[float, int]] = {}
        self._seq = itertools.count()
        self._timer_task: asyncio.Task[None] | None = None
        # Rate-limited adds of each item since its last forget(): the exponent of its back-off.
        self._failures: dict[T, int] = {}
        self._shutting_down = False

    # --- basic queue ---------------------------------------------------------------------------

    def add(self, item: T) -> None:
        """Mark ``item`` as needing processing.

        Queued items are not queued twice; an item being processed is queued again once, when its
        worker calls `done`. Ignored after `shutdown`.

        Args:
            item: a hashable id.
        """
        if self._shutting_down:
            return
        if item in self._dirty:
            if self._background.pop(item, None) is not None:  # waiting in the background lane
                self._queue.append(item)
            else:
                self._background_after_done.discard(item)
            return
        self._dirty.add(item)
        if item in self._processing:
            return  # done() queues it again
        self._queue.append(item)
        self._wake_one_getter()

    def add_background(self, item: T) -> None:
        """Mark ``item`` as needing processing, behind every item added with `add`.

        For sweeps that queue many items to look at again in case something was missed: an item
        that needs processing already keeps its place (and its lane); a later `add` moves this one
        to the front lane. Ignored after `shutdown`.

        Args:
            item: a hashable id.
        """
        if self._shutting_down or item in self._dirty:
            return
        self._dirty.add(item)
        if item in self._processing:
            self._background_after_done.add(item)
            return
        self._queue_background(item)
        self._wake_one_getter()

    def get_nowait(self) -> T:
        """Take the next ready item without waiting; the caller must call `done` with it.

        The decision `get` waits on (client-go's ``Get`` without the condition variable).

        Returns:
            The oldest queued item of the front lane (of the background lane when the front one
            is empty, or after `FOREGROUND_RUN` front items in a row), now marked as processing.

        Raises:
            QueueShutDown: if the queue is shut down and empty.
            asyncio.QueueEmpty: if no item is ready.
        """
        self._fire_due_timers()
        if self._background and (not self._queue or self._foreground_run >= self.FOREGROUND_RUN):
            self._foreground_run = 0
            while True:
                order, item = self._background_lane.popleft()
                if self._background.get(item) == order:
                    del self._background[item]
                    break
        elif self._queue:
            item = self._queue.popleft()
            self._foreground_run = self._foreground_run + 1 if self._background else 0
        else:
            item = None
        if item is not None:
            self._dirty.discard(item)
            self._processing.add(item)
            return item
        if self._shutting_down:
            raise QueueShutDown(self.name)
        raise asyncio.QueueEmpty

    async def get(self) -> T:
        """Wait for the next item; the caller must call `done` with it when finished.

        Returns:
            The oldest queued item, now marked as processing.

        Raises:
            QueueShutDown: once the queue is shut down and empty.
        """
        while True:
            try:
                return self.get_nowait()
            except asyncio.QueueEmpty:
                pass
            self._ensure_timer_task()
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                with contextlib.suppress(ValueError):
                    self._getters.remove(getter)
                # We may have been woken for an item and then cancelled: pass the wake-up on,
                # otherwise that item would wait for the next add.
                if getter.done() and not getter.cancelled():
                    self._wake_one_getter()
                raise

    def done(self, item: T) -> None:
        """Release ``item`` after processing; queue it again if it was added meanwhile.

        Args:
            item: an item returned by `get` or `get_nowait`.
        """
        self._processing.discard(item)
        if item in self._dirty:
            # Even after shutdown (client-go does the same): the add happened before it.
            if item in self._background_after_done:
                self._background_after_done.discard(item)
                self._queue_background(item)
            else:
                self._queue.append(item)
            self._wake_one_getter()

    def __len__(self) -> int:
        """Number of items ready for a worker, in both lanes (timers that are due count as ready)."""
        self._fire_due_timers()
        return len(self._queue) + len(self._background)

    # --- delaying queue ------------------------------------------------------------------------

    def add_after(self, item: T, delay: float) -> None:
        """`add` ``item`` after ``delay`` seconds of the queue's clock.

        If ``item`` is already waiting on a timer, the earlier deadline wins. Ignored after
        `shutdown`.

        Args:
            item: a hashable id.
            delay: seconds; ``<= 0`` adds at once.
        """
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(item)
            return
        deadline = self._clock.now() + delay
        current = self._deadlines.get(item)
        if current is not None and current[0] <= deadline:
            return
        seq = next(self._seq)
        self._deadlines[item] = (deadline, seq)
        heapq.heappush(self._timers, (deadline, seq, item))
        if self._timers[0][1] == seq:
            self._restart_timer_task()  # the new deadline is the earliest: the sleeper must wake sooner

    # --- rate limiting -------------------------------------------------------------------------

    def add_rate_limited(self, item: T) -> None:
        """`add_after` with the item's exponential back-off, and count one more failure.

        The n-th call since the last `forget` waits ``base_delay * 2**(n-1)``, at most ``max_delay``.
        Ignored after `shutdown` (the failure is still counted).

        Args:
            item: a hashable id.
        """
        failures = self._failures.get(item, 0)
        self._failures[item] = failures + 1
        # min() keeps the power finite: 2.0**1100 overflows a float, and the cap is reached long before.
        self.add_after(item, min(self._base_delay * 2.0 ** min(failures, 1000), self._max_delay))

    def forget(self, item: T) -> None:
        """Reset ``item``'s back-off: it was processed successfully.

        Args:
            item: a hashable id.
        """
        self._failures.pop(item, None)

    # --- shutdown ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop accepting adds, drop timers and wake every waiting `get`.

        Queued items are still handed out; `get` raises `QueueShutDown` once the queue is empty.
        Idempotent.
        """
        self._shutting_down = True
        self._timers.clear()
        self._deadlines.clear()
        if self._timer_task is not None:
            self._timer_task.cancel()
            self._timer_task = None
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)

    # --- internals -----------------------------------------------------------------------------

    def _queue_background(self, item: T) -> None:
        order = next(self._seq)
        self._background[item] = order
        self._background_lane.append((order, item))

    def _wake_one_getter(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def _fire_due_timers(self) -> None:
        """Move every item whose deadline has passed from the timer heap to the queue."""
        if not self._timers:
            return
        now = self._clock.now()
        while self._timers and self._timers[0][0] <= now:
            _, seq, item = heapq.heappop(self._timers)
            live = self._deadlines.get(item)
            if live is None or live[1] != seq:
                continue  # superseded by an earlier deadline for the same item
            del self._deadlines[item]
            self.add(item)

    def _ensure_timer_task(self) -> None:
        if self._timers and self._timer_task is None and not self._shutting_down:
            self._restart_timer_task()

    def _restart_timer_task(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the first get() starts the timer task
        if self._timer_task is not None:
            self._timer_task.cancel()
        self._timer_task = loop.create_task(self._run_timers(), name=f"workqueue-timers-{self.name}")

    async def _run_timers(self) -> None:
        """Sleep until the earliest deadline, fire due timers, repeat; exit when none are left."""
        try:
            while self._timers and not self._shutting_down:
                await self._clock.sleep_until(self._timers[0][0])
                self._fire_due_timers()
        finally:
            if self._timer_task is asyncio.current_task():
                self._timer_task = None
