"""The control loop: work queue, reconcile rounds, node state machines (DESIGN section 6)."""

from __future__ import annotations

from propeller._clock import Clock, FakeClock, MonotonicClock
from propeller._loop import Controller, FaultHook
from propeller._planner import Action, Cancel, Observations, Plan, PlannerConfig, Submit, plan_round
from propeller._queue import QueueShutDown, WorkQueue
from propeller._recovery import recovery_events

__all__ = [
    "Action",
    "Cancel",
    "Clock",
    "Controller",
    "FakeClock",
    "FaultHook",
    "MonotonicClock",
    "Observations",
    "Plan",
    "PlannerConfig",
    "QueueShutDown",
    "Submit",
    "WorkQueue",
    "plan_round",
    "recovery_events",
]
