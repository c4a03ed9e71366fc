"""The control loop: workers running reconcile rounds for executions (DESIGN section 6).

A round is: load the execution's state (cached; caught up from the log), poll the attempts that
reported, run the pure planner, append its events with the expected version, and only then carry
out its actions. The order makes every round re-entrant: if the process dies after the append, the
next process folds the log, submits again the queued attempts nobody runs (idempotent per
``(execution, node, attempt)``), polls by handle the ones recorded as running (a system failure if
they died with the process), and cancels again what the log no longer wants; if it dies before,
nothing happened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import anyio
import msgspec

from engine.errors import ConcurrencyConflict, CorruptEvent, StoreUnavailable
from engine.events import AnyEvent, ExecutionStarted, ExecutionSucceeded
from engine.events import ExecutionAborted as ExecutionAbortedEvent
from engine.events import ExecutionFailed as ExecutionFailedEvent
from engine.interfaces import (
    BlobStore,
    Catalog,
    EventStore,
    ExecutionStatus,
    Executor,
    TaskKey,
    TaskRequest,
    TaskStatus,
)
from engine.literals import offload_logs, offload_status, store_blobs
from engine.state import ExecutionState
from propeller._actions import CacheOutcome, Submit
from propeller._attempts import Attempts
from propeller._catalog_actions import CatalogActions, ReservationHeartbeat
from propeller._clock import Clock, MonotonicClock
from propeller._group_commit import GroupCommit
from propeller._planner import plan_round
from propeller._queue import QueueShutDown, WorkQueue
from propeller._round import Observations, PlannerConfig

__all__ = ["Controller"]

log = logging.getLogger("slipstream.propeller")
# One line per execution start and end, for whoever runs the loop (`slipstream serve` prints them).
lifecycle_log = logging.getLogger("slipstream.executions")

# Final states of executions this loop ended while a caller in this process waited for them,
# kept for `Controller.take_ended_state` (that caller asks for the outputs at once, so the newest
# few are enough; a serving process, which nobody waits on, keeps none).
_ENDED_KEPT = 128


def utc_now() -> datetime:
    return datetime.now(UTC)


class Controller:
    """Advances executions by running reconcile rounds on ``workers`` concurrent workers.

    Args:
        store: the event log.
        executors: executors by name (the planner's ``default_executor`` must be one of them).
        workers: concurrent reconcile workers.
        config: planner tunables.
        clock: returns the current UTC time; events are stamped with it.
        timer: the monotonic clock the work queue's delays and the periodic sweeps wait on.
        resync_interval: seconds between sweeps that re-enqueue every unfinished execution.
        revisit_interval: seconds between rounds of executions with attempts in flight, which poll
            those attempts (one lost without a call-back is found) and see what other processes
            appended (an abort).
        blobs: where literals above the inline limit go; without one, every value stays inline.
        catalog: memoized outputs (a started `Catalog`); without one, ``cache=True`` tasks run.
        reservation_ttl: seconds a ``cache_serialize`` reservation lasts without a heartbeat
            (`reservation_heartbeat` is the service that renews them).
        adopt: take up the store's unfinished executions (at start, in sweeps, and those other
            processes create); False runs only the executions given to `enqueue` (what this
            process launches or recovers), leaving the others to serving loops.
        project, domain: take up only the executions of this project and domain (None: any), a
            scoped engine's loop, or one server of several that share a store by project.
    """

    def __init__(
        self,
        store: EventStore,
        executors: Mapping[str, Executor],
        *,
        workers: int = 4,
        config: PlannerConfig | None = None,
        clock: Callable[[], datetime] = utc_now,
        timer: Clock | None = None,
        resync_interval: float = 30.0,
        revisit_interval: float = 2.0,
        blobs: BlobStore | None = None,
        catalog: Catalog | None = None,
        reservation_ttl: float = 30.0,
        adopt: bool = True,
        project: str | None = None,
        domain: str | None = None,
    ) -> None:
        self.store = store
        self.adopt = adopt
        self.project, self.domain = project, domain
        self.blobs = blobs
        self.executors = dict(executors)
        self.workers = workers
        config = config or PlannerConfig()
        self.config = dataclasses.replace(
            config,
            starts_on_submit=self._starts_on_submit,
            inline_limit=config.inline_limit if blobs is not None else 2**62,
            caching=catalog is not None,
        )
        self.clock = clock
        self.timer: Clock = timer or MonotonicClock()
        self.resync_interval = resync_interval
        self.revisit_interval = revisit_interval
        self.watch_pause = 0.25
        # how long a new execution is left to the loop the store prefers for it before this one
        # claims it (fair shares between serve processes; the quickest does not take everything)
        self.claim_delay = 0.5
        self._unclaimed: dict[str, float] = {}  # new executions left to their preferred loop: since when
        self.queue: WorkQueue[str] = WorkQueue(name="executions", clock=self.timer)
        self.catalog = (
            CatalogActions(catalog, self._note_cache_answer, clock, reservation_ttl) if catalog is not None else None
        )
        # the catalog's answers to lookups, kept for each execution's next round
        self._cache_answers: dict[str, dict[str, CacheOutcome]] = {}
        self.attempts = Attempts(self.executors, self._note_report, self.catalog)
        self._appender = GroupCommit(store)
        self._cache: dict[str, ExecutionState] = {}
        self._reported: dict[str, set[TaskKey]] = {}  # attempts to poll at the execution's next round
        self._changed: dict[str, asyncio.Event] = {}
        self._finished: dict[str, asyncio.Event] = {}
        # the states of executions this loop ended, oldest first (`take_ended_state`): each holds only
        # durable events, since a round whose append fails drops it
        self._ended: dict[str, ExecutionState] = {}
        # cached executions another writer may have appended to: their next round reads the tail
        # of the log first. Every other round trusts the cache, because the append's expected
        # version check turns any write it missed into a ConcurrencyConflict and a fresh load.
        self._stale: set[str] = set()
        # executions whose task code this process lacks: left to other engines, and not re-read
        # at every wake-up of the store watcher only to be declined again; resync sweeps look at
        # them again (a module fixed on disk imports at the next try), saying so only once
        self._declined: set[str] = set()
        # executions whose log is corrupt (CorruptEvent): never given another round by this loop,
        # whatever wakes them, until a person repairs the log and restarts it
        self._quarantined: set[str] = set()
        # quarantined here, but marking the projection failed: it still lists them as unfinished,
        # so resync keeps them quarantined and retries the mark instead of running them again
        self._unmarked: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        # graceful shutdown (drain): no new claims or submits; set after every round
        self._draining = False
        self._rounds = 0
        self._round_ended = asyncio.Event()

    # -- wake-ups ------------------------------------------------------------------------------------

    def enqueue(self, execution_id: str) -> None:
        """Schedule a round for the execution (deduplicated)."""
        self.queue.add(execution_id)

    def refresh(self, execution_id: str) -> None:
        """Schedule a round that first reads what others appended (after an abort, say)."""
        self._stale.add(execution_id)
        self.queue.add(execution_id)

    def _look_again(self, execution_id: str, *, stale: bool) -> None:
        """Schedule a sweep's round (in case a wake-up was missed), behind every round with
        something new to do: the queue's background lane. ``stale``: read the log's tail first."""
        if stale:
            self._stale.add(execution_id)
        self.queue.add_background(execution_id)

    def on_task_report(self, key: TaskKey) -> None:
        """Executor callback: an attempt started or ended. Safe to call from any thread."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            self._note_report(key)
        else:
            self._loop.call_soon_threadsafe(self._note_report, key)

    def _note_report(self, key: TaskKey) -> None:
        self._reported.setdefault(key.execution_id, set()).add(key)
        self.queue.add(key.execution_id)

    def _note_cache_answer(self, execution_id: str, node_id: str, outcome: CacheOutcome) -> None:
        self._cache_answers.setdefault(execution_id, {})[node_id] = outcome
        self.queue.add(execution_id)

    def reservation_heartbeat(self) -> ReservationHeartbeat | None:
        """The service renewing this loop's ``cache_serialize`` reservations (None without a catalog)."""
        if self.catalog is None:
            return None
        return ReservationHeartbeat(self.catalog, self._wants_reservation)

    def _wants_reservation(self, execution_id: str, node_id: str) -> bool:
        """Whether a node this loop runs still computes its cache key (it has not ended)."""
        state = self._cache.get(execution_id)
        if state is None or state.is_terminal:
            return False
        node = state.nodes.get(node_id)
        return node is not None and (node.phase in ("queued", "running", "retrying") or node_id in state.ready)

    async def wait_changed(self, execution_id: str) -> None:
        """Return after the next round of this execution that appended events."""
        event = self._changed.setdefault(execution_id, asyncio.Event())
        await event.wait()

    async def wait_finished(self, execution_id: str) -> None:
        """Return once a round of this process recorded the execution's end."""
        event = self._finished.setdefault(execution_id, asyncio.Event())
        await event.wait()

    def take_ended_state(self, execution_id: str, version: int) -> ExecutionState | None:
        """The state of an execution a round of this loop ended, if its log is still at ``version``
        (what the store's summary says); None otherwise. Given once: the caller waiting for the
        end answers its outputs from it instead of reading and folding the whole log again, and
        any later read goes to the log (and its checks). It is the loop's own: read it, never
        change it."""
        state = self._ended.pop(execution_id, None)
        return state if state is not None and state.version == version and state.is_terminal else None

    def _remember_ended(self, state: ExecutionState) -> None:
        ended = self._ended
        ended.pop(state.execution_id, None)
        ended[state.execution_id] = state
        if len(ended) > _ENDED_KEPT:
            del ended[next(iter(ended))]

    def _signal_changed(self, execution_id: str, *, finished: bool) -> None:
        event = self._changed.pop(execution_id, None)
        if event is not None:
            event.set()
        if finished:
            event = self._finished.pop(execution_id, None)
            if event is not None:
                event.set()

    # -- running ---------------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run workers, the resync sweep and the store watcher until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # the store's first answer is "unknown" (read every tail): asked now, before any state is
        # cached, the first revisit knows which executions other processes appended to
        self.store.changed_by_others()
        if self.adopt:
            await self.resync()
        try:
            async with anyio.create_task_group() as group:
                for _ in range(self.workers):
                    group.start_soon(self._worker)
                group.start_soon(self._revisit_running)
                if self.adopt:
                    group.start_soon(self._resync_periodically)
                    group.start_soon(self._watch_store)
                task_status.started()
        finally:
            self.queue.shutdown()
            if self.catalog is not None:
                with anyio.CancelScope(shield=True):
                    await self.catalog.flush()  # the last rounds' records reach the catalog

    async def resync(self) -> None:
        """Enqueue every unfinished execution in the store (start-up and periodic sweep), in the
        queue's background lane."""
        cursor = None
        while True:
            page = await self.store.list_executions(
                status=["created", "running"], project=self.project, domain=self.domain, limit=500, cursor=cursor
            )
            for summary in page.items:
                if summary.execution_id in self._unmarked:  # listed only because marking it failed
                    await self._mark_quarantined(summary.execution_id)
                    continue
                # listed as unfinished again: its log was restored and its projection rebuilt
                self._quarantined.discard(summary.execution_id)
                # the tail is read only where the listing is ahead of the cache (another writer
                # appended); an execution not cached gets a whole read anyway
                cached = self._cache.get(summary.execution_id)
                self._look_again(summary.execution_id, stale=cached is not None and summary.version > cached.version)
            cursor = page.next_cursor
            if cursor is None:
                return

    async def _resync_periodically(self) -> None:
        while True:
            await self._sleep(self.resync_interval)
            try:
                await self.resync()
            except StoreUnavailable as exc:  # an outage: the store logs it once, not each sweep
                log.debug("resync postponed to the next interval: %s", exc)
            except Exception:
                log.exception("resync failed; retrying at the next interval")

    async def _revisit_running(self) -> None:
        """Give every execution with attempts in flight a round now and then, polling them all.

        Another process may have appended to it (an abort from the CLI): only a round reads that
        and cancels the attempts. And an executor may have lost an attempt without a call-back (a
        worker gone with its machine): only a poll finds that out. A round with nothing new costs
        a poll per attempt in flight (and one read of the log's tail where another process appended).
        """
        while True:
            await self._sleep(self.revisit_interval)
            self.poll_in_flight()

    def poll_in_flight(self) -> None:
        """Schedule a round polling every attempt in flight, for each execution with attempts in
        flight or cancels owed; it reads the log's new tail first if another process may have
        appended to it (`EventStore.changed_by_others`)."""
        changed = self.store.changed_by_others()
        for execution_id in self.attempts.busy():
            self._reported.setdefault(execution_id, set()).update(self.attempts.tracked(execution_id))
            # stale only if somebody else appended: otherwise the cached state is current
            self._look_again(execution_id, stale=changed is None or execution_id in changed)

    async def _watch_store(self) -> None:
        """Pick up executions created by other processes sharing the store.

        It waits for creations and status changes only (``executions_only``: a store that can tell
        does not wake it for every append of every process); ours wake it too, and the pause after
        each look bounds the listing queries to a few per second however busy the loop is
        (launches in this process are enqueued directly).
        """
        epoch = self.store.lease_epoch()
        announced = False
        while True:
            try:
                if not announced:  # counted among the loops that share new executions fairly
                    await self.store.announce_loop(self.project, self.domain)
                    announced = True
                # while executions wait for their preferred loop, look again when their delay is up
                await self.store.wait_for_changes(
                    timeout=self.claim_delay if self._unclaimed else self.resync_interval, executions_only=True
                )
                if self.store.lease_epoch() != epoch:  # a loop sharing the store went away
                    epoch = self.store.lease_epoch()
                    await self._adopt(["created", "running"], pages=None)
                else:
                    await self._adopt(["created"], pages=1)
            except StoreUnavailable as exc:  # an outage: the store logs it once, not each retry
                log.debug("watching the store postponed: %s", exc)
                await self._sleep(1.0)
                continue
            except Exception:
                log.exception("watching the store failed; retrying")
                await self._sleep(1.0)
                continue
            await self._sleep(self.watch_pause)

    async def _adopt(self, statuses: list[ExecutionStatus], pages: int | None) -> None:
        """Enqueue the store's executions in ``statuses`` that this loop does not hold: at once
        those the store says this loop should own (its fair share); a new one that another loop is
        preferred for only once it has been left unclaimed (still ``created``) for ``claim_delay``.
        """
        cursor = None
        now = self.timer.now()
        seen: set[str] = set()
        while pages is None or pages > 0:
            page = await self.store.list_executions(
                status=statuses, project=self.project, domain=self.domain, limit=500, cursor=cursor
            )
            for summary in page.items:
                execution_id = summary.execution_id
                if execution_id in self._declined or execution_id in self._cache:
                    continue
                if self.store.prefers(execution_id, summary.project, summary.domain):
                    self.enqueue(execution_id)
                elif summary.status == "created":
                    seen.add(execution_id)
                    if now - self._unclaimed.setdefault(execution_id, now) >= self.claim_delay:
                        self.enqueue(execution_id)
            cursor = page.next_cursor
            if cursor is None:
                break
            if pages is not None:
                pages -= 1
        if cursor is None:  # a complete listing: the others left `created` (someone runs them)
            self._unclaimed = {e: t for e, t in self._unclaimed.items() if e in seen}

    async def _worker(self) -> None:
        while True:
            try:
                execution_id = await self.queue.get()
            except QueueShutDown:
                return
            self._rounds += 1
            try:
                await self.reconcile(execution_id)
            except ConcurrencyConflict:
                self.queue.add_rate_limited(execution_id)
            except CorruptEvent as exc:  # retrying cannot help: stop running it, and say so once
                await self._quarantine(execution_id, exc)
            except StoreUnavailable as exc:  # an outage, not a bug: the store logs it once; retried with back-off
                log.debug("round of execution %s postponed: %s", execution_id, exc)
                self.queue.add_rate_limited(execution_id)
            except Exception:
                log.exception("round of execution %s failed; backing off", execution_id)
                self.queue.add_rate_limited(execution_id)
            else:
                self.queue.forget(execution_id)
            finally:
                self.queue.done(execution_id)
                self._rounds -= 1
                self._round_ended.set()

    # -- graceful shutdown ---------------------------------------------------------------------------

    async def drain(self, timeout: float) -> bool:
        """Stop taking work and hand back the executions this loop holds (a graceful shutdown).

        From the call on, rounds claim no execution and submit no attempt; an execution is
        released as soon as none of its attempts is in flight here (its attempts queued meanwhile
        are submitted by the loop that takes it over, as after a restart). Attempts in flight run
        on, and the rounds that record their ends still run. Then the work queue is shut down and
        the rounds in progress are awaited. Call it once, then cancel `run` (leave the engine).

        Args:
            timeout: seconds to wait in all; attempts still in flight then are cancelled when their
                executors close, and the loops that take the executions over retry them.

        Returns:
            True if everything was handed back in time, False if the timeout cut it short.
        """
        self._draining = True
        for execution_id in list(self._cache):  # idle executions: hand them back now
            self.queue.add(execution_id)
        with anyio.move_on_after(timeout) as scope:
            while self.attempts.busy():
                self._round_ended.clear()
                await self._round_ended.wait()
            self.queue.shutdown()  # what is queued still gets its (handing-back) round
            while self._rounds or len(self.queue):
                self._round_ended.clear()
                await self._round_ended.wait()
        self.queue.shutdown()
        return not scope.cancelled_caught

    async def _quarantine(self, execution_id: str, exc: CorruptEvent) -> None:
        """Stop running an execution whose log is corrupt: one log line, the projection's status
        ``quarantined`` (what `slipstream executions list` shows, and what resync sweeps skip),
        its attempts here cancelled, its lease released and its waiters woken.

        Runs inside the worker's ``except``: it never raises (but for cancellation), whatever the
        store or the executors answer, so one corrupt log cannot end a worker or the loop.
        """
        log.error("execution %s quarantined, its event log is corrupt: %s", execution_id, exc)
        self._quarantined.add(execution_id)
        self.queue.forget(execution_id)
        self._stale.discard(execution_id)
        try:
            await self.attempts.disown(execution_id)
        except Exception as failed:  # its attempts end with their executors; the lease still goes
            log.warning("could not cancel the attempts of quarantined execution %s: %r", execution_id, failed)
        await self._mark_quarantined(execution_id)
        try:
            await self._hand_back(execution_id)
        except Exception as failed:  # the lease expires on its own; no other loop runs it either
            log.warning("could not release quarantined execution %s: %r", execution_id, failed)
        self._signal_changed(execution_id, finished=True)

    async def _mark_quarantined(self, execution_id: str) -> None:
        """Set the projection's status to ``quarantined``; if that fails (an outage, a store that
        cannot, a denied write), say so in one line and keep the execution quarantined in this
        loop: resync sweeps, which still see it unfinished, retry the mark instead of running it."""
        try:
            await self.store.quarantine(execution_id)
        except Exception as failed:
            if execution_id not in self._unmarked:  # once, not at every sweep's retry
                log.warning(
                    "could not mark execution %s quarantined (retried at each resync): %r", execution_id, failed
                )
            self._unmarked.add(execution_id)
        else:
            self._unmarked.discard(execution_id)

    async def _hand_back(self, execution_id: str) -> None:
        self._cache.pop(execution_id, None)
        self._reported.pop(execution_id, None)
        self._cache_answers.pop(execution_id, None)
        await self.store.release(execution_id)

    # -- a round -------------------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        await self.timer.sleep_until(self.timer.now() + seconds)

    def _starts_on_submit(self, executor: str, request: TaskRequest) -> bool:
        if self._draining:  # its submit will be dropped: do not record a start that never happens
            return False
        found = self.executors.get(executor)
        return found is not None and found.starts_on_submit(request)

    async def _load(self, execution_id: str) -> tuple[ExecutionState | None, bool]:
        state = self._cache.get(execution_id)
        if state is None:
            # a whole read is as current as a tail read would be (a refresh during it marks it again)
            self._stale.discard(execution_id)
            events = await self.store.read(execution_id)
            if not events:
                return None, False
            return ExecutionState.fold(events), True
        if execution_id in self._stale:
            self._stale.discard(execution_id)
            ExecutionState.fold(await self.store.read(execution_id, after=state.version), state)
        return state, False

    async def reconcile(self, execution_id: str) -> None:
        """One round for one execution. Raises ``ConcurrencyConflict`` if another writer won,
        ``CorruptEvent`` if its log is corrupt."""
        if execution_id in self._quarantined:
            return
        if self._draining and self.attempts.done_with(execution_id):
            await self._hand_back(execution_id)
            return
        if not await self.store.claim(execution_id):
            # another process runs it; if we lost the lease while running attempts, stop ours
            self._cache.pop(execution_id, None)
            await self.attempts.disown(execution_id)
            return
        state, fresh = await self._load(execution_id)
        if state is None or (
            fresh and not (self._in_scope(state) and self._can_run(state, say=execution_id not in self._declined))
        ):
            if state is not None:
                self._declined.add(execution_id)
            self._cache.pop(execution_id, None)
            await self.store.release(execution_id)
            return
        self._declined.discard(execution_id)
        reported = self._reported.pop(execution_id, set())
        answers = self._cache_answers.pop(execution_id, {})
        if fresh:  # attempts the log says run, which this process may never have heard of
            reported |= self.attempts.adopt(state, self.config.default_executor)
        tracked = self.attempts.tracked(execution_id)
        version = state.version
        try:
            statuses = await self._offloaded(await self.attempts.poll(execution_id, reported))
            observations = Observations(
                now=self.clock(), completions=statuses, in_flight=tracked.keys(), resubmit=fresh, cache=answers
            )
            plan = plan_round(state, observations, self.config)
            if plan.blobs:  # before the events that refer to them: content-addressed, so idempotent
                assert self.blobs is not None
                await store_blobs(self.blobs, plan.blobs)
            if plan.events:
                await self._appender.append(execution_id, version, plan.events)
        except BaseException:
            # the state may hold events that are not durable: forget it, and keep the reports for
            # the retried round (executors keep results until they are forgotten)
            self._cache.pop(execution_id, None)
            self._ended.pop(execution_id, None)
            self._reported.setdefault(execution_id, set()).update(reported)
            for node_id, outcome in answers.items():
                self._cache_answers.setdefault(execution_id, {}).setdefault(node_id, outcome)
            raise
        self._cache[execution_id] = state
        if plan.events:
            log_lifecycle(state, plan.events)
            if state.is_terminal and execution_id in self._finished:  # somebody here waits for it
                self._remember_ended(state)
        self.attempts.forget_finished(execution_id, statuses)
        actions = plan.actions
        if self._draining:  # start nothing new: whoever takes the execution over submits it
            actions = [action for action in actions if not isinstance(action, Submit)]
        await self.attempts.dispatch(execution_id, actions)
        if plan.wake_at is not None:
            delay = (plan.wake_at - observations.now).total_seconds()
            self.queue.add_after(execution_id, max(delay, 0.0))
        if plan.events or state.is_terminal:  # terminal: maybe ended by another writer (an abort)
            self._signal_changed(execution_id, finished=state.is_terminal)
        if (state.is_terminal or self._draining) and self.attempts.done_with(execution_id):
            await self._hand_back(execution_id)

    async def _offloaded(self, statuses: dict[TaskKey, TaskStatus]) -> dict[TaskKey, TaskStatus]:
        """Statuses ready to be recorded: their logs stored as blobs (events hold the address),
        and outputs above the inline limit stored too (for an executor that does not offload them
        in its workers). Without a blob store, logs are not kept."""
        if self.blobs is None:
            return {key: _without_logs(status) for key, status in statuses.items()}
        limit = self.config.inline_limit
        result = dict(statuses)
        for key, status in statuses.items():
            if status.logs or any(r.logs for r in status.elements):
                status = result[key] = await offload_logs(status, self.blobs)
            if (
                any(len(v) > limit for v in status.outputs.values())
                or any(r.output is not None and len(r.output) > limit for r in status.elements)
                or (status.dynamic_spec is not None and len(status.dynamic_spec) > limit)
            ):
                result[key] = await offload_status(status, self.blobs, limit)
        return result

    def _in_scope(self, state: ExecutionState) -> bool:
        """Whether the execution belongs to this loop's project and domain (any, unscoped)."""
        created = state.created
        return created is None or (self.project in (None, created.project) and self.domain in (None, created.domain))

    def _can_run(self, state: ExecutionState, *, say: bool = True) -> bool:
        """Whether this process has the code of every task the execution has planned so far
        (``say``: log which task it lacks; `slipstream serve` prints it).

        An engine resumes what it finds in the store; one opened for another workflow file must not
        take over (and fail for good) executions whose task modules it cannot import. Left alone,
        such an execution waits for an engine that has the code: the line tells whoever runs a
        server why it does not move.
        """
        if state.is_terminal:
            return True
        for scope in state.scopes.values():
            for node in scope.spec.task_nodes():
                executor = self.executors.get(node.options.executor or self.config.default_executor)
                if executor is not None and not executor.can_run(node.task):
                    if say:
                        log.info(
                            "leaving execution %s to another engine: task %s:%s cannot be loaded here "
                            "(is its module on this process's path? serve --path adds one); looked at "
                            "again at each resync",
                            state.execution_id,
                            node.task.module,
                            node.task.qualname,
                        )
                    return False
        return True


def _without_logs(status: TaskStatus) -> TaskStatus:
    if not status.logs and not any(r.logs for r in status.elements):
        return status
    elements = [msgspec.structs.replace(r, logs="") if r.logs else r for r in status.elements]
    return msgspec.structs.replace(status, logs="", elements=elements)


# The events that start or end an execution: a lifecycle line each. Looked up by exact type (every
# round's events pass here, and a serving process logs thousands of lines a second).
_LIFECYCLE_EVENTS = frozenset({ExecutionStarted, ExecutionSucceeded, ExecutionFailedEvent, ExecutionAbortedEvent})
_NEEDS_QUOTES = re.compile(r'[ "=]')


def log_lifecycle(state: ExecutionState, events: list[AnyEvent]) -> None:
    """A ``key=value`` line per execution start and end in ``events`` (the same fields are set on
    the record, for structured handlers)."""
    if not lifecycle_log.isEnabledFor(logging.INFO):
        return
    for event in events:
        kind = type(event)
        if kind not in _LIFECYCLE_EVENTS:
            continue
        what = "started" if kind is ExecutionStarted else state.phase
        created = state.created
        fields: dict[str, object] = {
            "execution": event.execution_id,
            "workflow": created.workflow if created else "",
            "project": created.project if created else "",
            "domain": created.domain if created else "",
        }
        if what != "started" and state.started_at is not None:
            fields["seconds"] = round((event.at - state.started_at).total_seconds(), 3)
        if isinstance(event, ExecutionFailedEvent):
            fields["node"] = event.error.node_id
            fields["error"] = event.error.message.splitlines()[0] if event.error.message else ""
        elif isinstance(event, ExecutionAbortedEvent):
            fields["reason"] = state.abort_reason
        text = " ".join([f"{key}={_quoted(value)}" for key, value in fields.items()])
        lifecycle_log.info("execution %s %s", what, text, extra={"event": f"execution_{what}", **fields})


def _quoted(value: object) -> str:
    text = str(value)
    return text if text and _NEEDS_QUOTES.search(text) is None else '"' + text.replace('"', '\\"') + '"'
