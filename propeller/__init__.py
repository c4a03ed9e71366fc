"""The control loop: work queue, reconcile rounds, node state machines (DESIGN section 6)."""

from __future__ import annotations

from propeller._clock import Clock, FakeClock, MonotonicClock
from propeller._queue import QueueShutDown, WorkQueue

__all__ = [
    "Clock",
    "FakeClock",
    "MonotonicClock",
    "QueueShutDown",
    "WorkQueue",
]
