"""Change wake-ups for `EventStore.wait_for_changes`, one position per consumer.

A single shared flag, cleared by whoever returns first, lets one consumer swallow another's
wake-up: the control loop's watcher returns and clears it while the relay is busy publishing, and
the relay then sleeps through the append it should have read. Here every change bumps a
generation number, and each consumer (the calling asyncio task) remembers the generation it last
returned at, so each is woken for every change it has not yet seen, whoever else was woken.

Part of the floor: the standard library and anyio only.
"""

from __future__ import annotations

import asyncio
import weakref

import anyio

__all__ = ["ChangeSignal"]


class ChangeSignal:
    """Per-consumer change notifications; a consumer is the asyncio task that calls.

    A task's first call starts from a position shared by all first calls: the generation at which
    a first call last returned (0 at the start). So code that waits from a fresh task each time
    (``asyncio.wait_for`` on Python 3.11 runs its argument in a new task) keeps the behaviour of
    one shared flag, and is woken for changes since its previous wait, while long-lived consumers
    never move that shared position after their first call and so never swallow its wake-ups.
    Event-loop-only: call `notify` from the loop's thread.
    """

    def __init__(self) -> None:
        self._generation = 0
        self._first_calls = 0  # the position of tasks that never returned from a wait before
        self._event: anyio.Event | None = None
        # weak: a finished task's position goes with it
        self._seen: weakref.WeakKeyDictionary[asyncio.Task[object], int] = weakref.WeakKeyDictionary()

    def notify(self) -> None:
        """Something changed: wake every consumer (now, or at its next wait)."""
        self._generation += 1
        event, self._event = self._event, None
        if event is not None:
            event.set()

    def take(self) -> bool:
        """Whether the calling consumer has changes it was not yet woken for; marks them seen."""
        consumer = _consumer()
        if consumer is None:
            return True
        seen = self._seen.get(consumer)
        if seen is None:
            seen, self._first_calls = self._first_calls, self._generation
        self._seen[consumer] = self._generation
        return seen != self._generation

    async def wait(self, timeout: float | None) -> None:
        """Wait until the calling consumer has unseen changes, or ``timeout`` seconds (``None``: no
        limit); does not mark them seen (`take` does)."""
        consumer = _consumer()
        if consumer is None or self._seen.get(consumer, self._first_calls) != self._generation:
            return
        if self._event is None:
            self._event = anyio.Event()
        event = self._event
        with anyio.move_on_after(timeout):
            await event.wait()


def _consumer() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: nothing to remember a position for
        return None
