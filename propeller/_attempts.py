"""The attempts this process has handed to executors, and the one dispatcher of a round's actions.

The log says which attempts should run; this module remembers which executor holds each one and
under which durable handle, polls them, and carries out `Submit`, `Cancel` and `Release` (and hands
the cache actions to `propeller._catalog_actions`). After a
restart it adopts, from the log, the attempts recorded as running, and polls them by handle: an
executor whose work outlived the engine (Ray, agents) finds them; one whose work died with it says
``lost``, which the planner records as a system failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from engine.errors import ConfigError, SlipstreamError
from engine.interfaces import Executor, TaskKey, TaskStatus
from engine.models import ErrorInfo
from engine.state import ExecutionState
from propeller._actions import Action, CacheLookup, CachePut, CacheRelease, Cancel, Release, Submit
from propeller._catalog_actions import CatalogActions

__all__ = ["Attempts", "Tracked"]

log = logging.getLogger("slipstream.propeller")

_FINAL_PHASES = frozenset({"succeeded", "failed"})
_LOST = TaskStatus(phase="lost")


@dataclass(frozen=True, slots=True)
class Tracked:
    """An attempt in flight: the executor that holds it and its durable handle there."""

    executor: str
    handle: str = ""


class Attempts:
    """In-flight attempts by execution, their polls, and the action dispatcher.

    Args:
        executors: executors by name.
        report: schedules a round for an attempt's execution (used when a submit itself fails,
            which is then reported like a failed attempt).
    """

    def __init__(
        self,
        executors: Mapping[str, Executor],
        report: Callable[[TaskKey], None],
        catalog: CatalogActions | None = None,
    ) -> None:
        self.executors = dict(executors)
        self._report = report
        self.catalog = catalog  # carries out the cache actions (none without a catalog)
        self._in_flight: dict[str, dict[TaskKey, Tracked]] = {}
        self._synthetic: dict[TaskKey, TaskStatus] = {}  # failures of submit() itself
        self._owed_cancels: dict[str, list[Cancel]] = {}  # cancels that raised: tried again
        # one Tracked per (executor, handle): executors whose handle names a process or a pool
        # share it across a 100k-element map instead of holding one object per element
        self._entries: dict[tuple[str, str], Tracked] = {}

    def tracked(self, execution_id: str) -> dict[TaskKey, Tracked]:
        """The execution's attempts in flight (a live view)."""
        return self._in_flight.setdefault(execution_id, {})

    def busy(self) -> list[str]:
        """Executions with attempts in flight or cancels owed."""
        return [eid for eid, tracked in self._in_flight.items() if tracked] + list(self._owed_cancels)

    def adopt(self, state: ExecutionState, default_executor: str) -> set[TaskKey]:
        """Track the attempts the log records as running that this process does not know (after a
        restart, or when another process owned the execution); return them, to be polled."""
        tracked = self.tracked(state.execution_id)
        adopted: set[TaskKey] = set()
        for node_id in state.active:
            node = state.nodes[node_id]
            key = TaskKey(state.execution_id, node_id, node.attempt)
            if node.phase == "running" and key not in tracked:
                tracked[key] = self._entry(node.executor or node.options.executor or default_executor, node.handle)
                adopted.add(key)
        return adopted

    async def poll(self, execution_id: str, keys: Iterable[TaskKey]) -> dict[TaskKey, TaskStatus]:
        """The status of each attempt: from its executor by handle, ``lost`` if none holds it."""
        tracked = self.tracked(execution_id)
        statuses: dict[TaskKey, TaskStatus] = {}
        for key in keys:
            synthetic = self._synthetic.get(key)
            if synthetic is not None:
                statuses[key] = synthetic
                continue
            entry = tracked.get(key)
            executor = self.executors.get(entry.executor) if entry is not None else None
            statuses[key] = _LOST if entry is None or executor is None else await executor.poll(key, entry.handle)
        return statuses

    def forget_finished(self, execution_id: str, statuses: Mapping[TaskKey, TaskStatus]) -> None:
        """Drop the attempts whose end the round recorded (and the executors' results of them)."""
        tracked = self.tracked(execution_id)
        for key, status in statuses.items():
            if status.phase in _FINAL_PHASES or status.phase == "lost":
                entry = tracked.pop(key, None)
                if self._synthetic.pop(key, None) is None and entry is not None:
                    executor = self.executors.get(entry.executor)
                    if executor is not None:
                        executor.forget(key)

    def done_with(self, execution_id: str) -> bool:
        """Whether nothing of the execution is in flight or owed; if so, stop tracking it."""
        if self._in_flight.get(execution_id) or self._owed_cancels.get(execution_id):
            return False
        self._in_flight.pop(execution_id, None)
        return True

    async def dispatch(self, execution_id: str, actions: Iterable[Action]) -> None:
        """Carry out a round's actions in order (after its events are durable), and retry the
        cancels that failed before."""
        owed = self._owed_cancels.pop(execution_id, [])
        for action in [*owed, *actions]:
            match action:
                case Submit():
                    await self._submit(execution_id, action)
                case Cancel():
                    await self._cancel(execution_id, action)
                case Release():
                    executor = self.executors.get(action.executor)
                    if executor is not None:
                        executor.release(action.key)
                case CacheLookup() | CachePut() | CacheRelease():
                    if self.catalog is None:
                        raise TypeError(f"{type(action).__name__} planned without a catalog: set PlannerConfig.caching")
                    await self.catalog.carry_out(action)
                case _:
                    raise TypeError(f"unknown action {action!r}: add it to propeller._actions and dispatch it here")

    async def disown(self, execution_id: str) -> None:
        """Another process owns the execution now: stop what this one runs of it."""
        self._owed_cancels.pop(execution_id, None)
        for key, entry in self._in_flight.pop(execution_id, {}).items():
            executor = self.executors.get(entry.executor)
            if executor is not None:
                try:
                    await executor.cancel(key, entry.handle)
                except Exception:
                    log.warning("cancelling attempt %s/%s#%d failed", key.execution_id, key.node_id, key.attempt)

    async def _submit(self, execution_id: str, action: Submit) -> None:
        key = action.request.key
        executor = self.executors.get(action.executor)
        tracked = self.tracked(execution_id)
        tracked[key] = self._entry(action.executor, "")
        try:
            if executor is None:
                raise ConfigError(
                    f"node {key.node_id!r} asks for executor {action.executor!r}, which is not configured; "
                    f"configured: {sorted(self.executors)}. Install the plugin or change the task's executor="
                )
            tracked[key] = self._entry(action.executor, await executor.submit(action.request))
        except Exception as exc:
            # a submit that cannot even start is reported like a failed attempt, so the planner
            # applies the retry budgets instead of the loop spinning on it
            kind = "user" if isinstance(exc, SlipstreamError) else "system"
            error = ErrorInfo(kind=kind, message=f"{type(exc).__name__}: {exc}", retryable=kind == "system")
            self._synthetic[key] = TaskStatus(phase="failed", error=error)
            self._report(key)

    def _entry(self, executor: str, handle: str) -> Tracked:
        entry = self._entries.get((executor, handle))
        if entry is None:
            entry = Tracked(executor, handle)
            if len(self._entries) < 10_000:  # handles unique per attempt are not worth keeping
                self._entries[executor, handle] = entry
        return entry

    async def _cancel(self, execution_id: str, action: Cancel) -> None:
        tracked = self.tracked(execution_id)
        entry = tracked.get(action.key)
        self._synthetic.pop(action.key, None)
        executor = self.executors.get(entry.executor if entry is not None else action.executor)
        if executor is not None:
            try:
                await executor.cancel(action.key, action.handle or (entry.handle if entry else ""))
            except Exception as exc:
                # keep it tracked and owed: the next round of the execution tries again
                log.warning(
                    "cancelling attempt %s/%s#%d on executor %r failed (%s: %s); trying again at the next round",
                    action.key.execution_id,
                    action.key.node_id,
                    action.key.attempt,
                    action.executor,
                    type(exc).__name__,
                    exc,
                )
                self._owed_cancels.setdefault(execution_id, []).append(action)
                return
        tracked.pop(action.key, None)
