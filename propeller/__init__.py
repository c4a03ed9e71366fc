"""The control loop: work queue, reconcile rounds, node handlers, actions (DESIGN section 6)."""

from __future__ import annotations

from propeller._actions import Action, CacheLookup, CacheOutcome, CachePut, CacheRelease, Cancel, Release, Submit
from propeller._catalog_actions import ReservationHeartbeat
from propeller._clock import Clock, FakeClock, MonotonicClock
from propeller._loop import Controller
from propeller._planner import Plan, plan_round
from propeller._queue import QueueShutDown, WorkQueue
from propeller._recovery import recovery_events
from propeller._round import Observations, PlannerConfig

__all__ = [
    "Action",
    "CacheLookup",
    "CacheOutcome",
    "CachePut",
    "CacheRelease",
    "Cancel",
    "Clock",
    "Controller",
    "FakeClock",
    "MonotonicClock",
    "Observations",
    "Plan",
    "PlannerConfig",
    "QueueShutDown",
    "Release",
    "ReservationHeartbeat",
    "Submit",
    "WorkQueue",
    "plan_round",
    "recovery_events",
]
