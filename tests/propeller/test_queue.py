"""WorkQueue: client-go workqueue semantics, driven by a FakeClock (no real sleeps)."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import propeller
from engine.errors import SlipstreamError
from propeller import Clock, FakeClock, MonotonicClock, QueueShutDown, WorkQueue


async def settle(rounds: int = 10) -> None:
    """Let woken coroutines (timer task, getters) run; yields the loop, never waits for time."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def drain_ready(queue: WorkQueue[str]) -> list[str]:
    items: list[str] = []
    while True:
        try:
            items.append(queue.get_nowait())
        except asyncio.QueueEmpty:
            return items


def test_exports() -> None:
    # propeller/__init__ also exports the loop and planner names; these are the queue's.
    for name in ["Clock", "FakeClock", "MonotonicClock", "QueueShutDown", "WorkQueue"]:
        assert name in propeller.__all__
        assert getattr(propeller, name) is globals()[name]


def test_clocks_satisfy_protocol() -> None:
    assert isinstance(MonotonicClock(), Clock)
    assert isinstance(FakeClock(), Clock)


# --- basic queue -------------------------------------------------------------------------------


async def test_fifo_order() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for item in ["a", "b", "c"]:
        queue.add(item)
    assert len(queue) == 3
    assert [await queue.get(), await queue.get(), await queue.get()] == ["a", "b", "c"]
    assert len(queue) == 0
    assert queue.processing == 3


async def test_add_while_queued_is_deduplicated() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("b")
    queue.add("a")
    assert len(queue) == 2
    assert drain_ready(queue) == ["a", "b"]


async def test_add_while_processing_requeues_once_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    item = await queue.get()
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0, "an item being processed must not be handed to a second worker"
    queue.done(item)
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    assert len(queue) == 0 and queue.processing == 0


async def test_done_without_readd_does_not_requeue() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.done(await queue.get())
    assert len(queue) == 0


async def test_get_waits_for_add() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await settle()
    assert not getter.done()
    queue.add("x")
    assert await asyncio.wait_for(getter, 5) == "x"


async def test_cancelled_getter_passes_wakeup_on() -> None:
    queue: WorkQueue[str] = WorkQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await settle()
    queue.add("x")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs: `second` must get the item
    assert await asyncio.wait_for(second, 5) == "x"
    with pytest.raises(asyncio.CancelledError):
        await first


def test_get_nowait_on_empty_queue() -> None:
    queue: WorkQueue[str] = WorkQueue()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


# --- delaying queue ----------------------------------------------------------------------------


async def test_add_after_fires_at_deadline() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 10)
    assert len(queue) == 0 and queue.waiting == 1
    clock.advance(9.999)
    assert len(queue) == 0
    clock.advance(0.001)
    assert len(queue) == 1 and queue.waiting == 0
    assert queue.get_nowait() == "a"


async def test_add_after_wakes_blocked_getter() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    getter = asyncio.create_task(queue.get())
    queue.add_after("a", 5)
    await settle()
    assert not getter.done()
    assert clock.next_deadline == 5
    clock.advance(5)
    assert await asyncio.wait_for(getter, 5) == "a"


async def test_add_after_orders_by_deadline() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("late", 30)
    queue.add_after("early", 10)
    queue.add_after("middle", 20)
    got: list[str] = []
    for _ in range(3):
        getter = asyncio.create_task(queue.get())
        await settle()
        assert clock.next_deadline is not None
        clock.advance(clock.next_deadline - clock.now())
        got.append(await asyncio.wait_for(getter, 5))
    assert got == ["early", "middle", "late"]


async def test_add_after_earliest_deadline_wins() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    getter = asyncio.create_task(queue.get())
    queue.add_after("a", 10)
    await settle()
    queue.add_after("a", 3)  # earlier: replaces the 10 s timer
    queue.add_after("a", 7)  # later than the current 3 s: ignored
    assert queue.waiting == 1
    await settle()
    assert clock.next_deadline == 3
    clock.advance(3)
    assert await asyncio.wait_for(getter, 5) == "a"
    queue.done("a")
    clock.advance(10)  # the superseded 7 s and 10 s timers must not fire again
    await settle()
    assert len(queue) == 0


async def test_add_after_non_positive_delay_adds_now() -> None:
    queue: WorkQueue[str] = WorkQueue(clock=FakeClock())
    queue.add_after("a", 0)
    queue.add_after("b", -1)
    assert drain_ready(queue) == ["a", "b"]


async def test_timer_for_queued_item_does_not_duplicate() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 1)
    queue.add("a")
    clock.advance(1)
    assert drain_ready(queue) == ["a"]


def test_add_after_before_loop_starts_fires_once_a_getter_waits() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 2)  # no running loop: the timer task is started by the first get()

    async def scenario() -> str:
        getter = asyncio.create_task(queue.get())
        await settle()
        clock.advance(2)
        return await asyncio.wait_for(getter, 5)

    assert asyncio.run(scenario()) == "a"


# --- rate limiting -----------------------------------------------------------------------------


def test_rate_limited_backoff_grows_caps_and_forgets() -> None:
    queue: WorkQueue[str] = WorkQueue(clock=FakeClock(), base_delay=0.01, max_delay=1.0)
    delays = [queue.when("a") for _ in range(10)]
    assert delays == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0]
    assert queue.num_requeues("a") == 10
    assert queue.num_requeues("b") == 0
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    assert queue.when("a") == 0.01


def test_rate_limited_backoff_is_per_item_and_never_overflows() -> None:
    queue: WorkQueue[str] = WorkQueue(clock=FakeClock())
    for _ in range(3):
        queue.when("a")
    assert queue.when("b") == pytest.approx(0.005)
    for _ in range(5000):
        queue.when("a")
    assert queue.when("a") == 60.0


async def test_add_rate_limited_parks_item_for_backoff() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock, base_delay=1.0, max_delay=8.0)
    expected_delays = [1.0, 2.0, 4.0, 8.0, 8.0]
    for delay in expected_delays:
        queue.add_rate_limited("a")
        clock.advance(delay - 0.001)
        assert len(queue) == 0
        clock.advance(0.001)
        assert queue.get_nowait() == "a"
        queue.done("a")
    assert queue.num_requeues("a") == len(expected_delays)


def test_invalid_delays_rejected() -> None:
    with pytest.raises(ValueError, match="need 0 < base_delay <= max_delay"):
        WorkQueue(base_delay=2, max_delay=1)


# --- shutdown ----------------------------------------------------------------------------------


async def test_shutdown_wakes_all_getters() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getters = [asyncio.create_task(queue.get()) for _ in range(5)]
    await settle()
    queue.shutdown()
    results = await asyncio.wait_for(asyncio.gather(*getters, return_exceptions=True), 5)
    assert all(isinstance(r, QueueShutDown) for r in results)
    assert isinstance(results[0], SlipstreamError)
    assert "shut down" in str(results[0])


async def test_shutdown_hands_out_queued_items_then_raises() -> None:
    queue: WorkQueue[str] = WorkQueue(name="q")
    queue.add("a")
    queue.add("b")
    queue.shutdown()
    queue.add("c")  # ignored after shutdown
    assert await queue.get() == "a"
    assert await queue.get() == "b"
    with pytest.raises(QueueShutDown, match="work queue 'q' is shut down"):
        await queue.get()


async def test_shutdown_drops_timers_and_ignores_later_timers() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    getter = asyncio.create_task(queue.get())
    queue.add_after("a", 1)
    await settle()
    queue.shutdown()
    queue.add_after("b", 1)
    queue.add_rate_limited("c")
    with pytest.raises(QueueShutDown):
        await asyncio.wait_for(getter, 5)
    clock.advance(100)
    await settle()
    assert len(queue) == 0 and queue.waiting == 0


async def test_readd_during_processing_survives_shutdown() -> None:
    # client-go: Done() queues a dirty item even after ShutDown, because the add came first.
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    item = await queue.get()
    queue.add("a")
    queue.shutdown()
    queue.done(item)
    assert await queue.get() == "a"


async def test_shutdown_with_drain_waits_for_processing() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    item = await queue.get()
    drain = asyncio.create_task(queue.shutdown_with_drain())
    await settle()
    assert not drain.done()
    queue.done(item)
    await asyncio.wait_for(drain, 5)


async def test_shutdown_with_drain_returns_at_once_when_idle() -> None:
    queue: WorkQueue[str] = WorkQueue()
    await asyncio.wait_for(queue.shutdown_with_drain(), 5)
    assert queue.shutting_down


# --- threads -----------------------------------------------------------------------------------


async def test_add_threadsafe_from_another_thread() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(queue.get())
    thread = threading.Thread(target=queue.add_threadsafe, args=("from-thread",))
    thread.start()
    thread.join()
    assert await asyncio.wait_for(getter, 5) == "from-thread"


def test_add_threadsafe_needs_a_loop() -> None:
    queue: WorkQueue[str] = WorkQueue()
    with pytest.raises(RuntimeError, match="not bound to an event loop"):
        queue.add_threadsafe("a")


# --- concurrency -------------------------------------------------------------------------------


async def run_workers(seed: int, workers: int, items: int, adds: int) -> None:
    """Many workers plus a random adder: no item is ever held by two workers, none is lost."""
    rng = random.Random(seed)
    queue: WorkQueue[int] = WorkQueue()
    in_progress: set[int] = set()
    # pending[i] is True when item i was added after its last processing started: it must be
    # processed again before the test ends.
    pending: dict[int, bool] = {}
    violations: list[int] = []

    async def worker() -> None:
        while True:
            try:
                item = await queue.get()
            except QueueShutDown:
                return
            if item in in_progress:
                violations.append(item)
            in_progress.add(item)
            pending[item] = False
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
            in_progress.discard(item)
            queue.done(item)

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    for _ in range(adds):
        item = rng.randrange(items)
        queue.add(item)
        pending[item] = True
        if rng.random() < 0.5:
            await asyncio.sleep(0)
    # Shutdown still hands out queued items and re-queues items re-added during processing, so
    # the workers exit only once every add has been processed.
    queue.shutdown()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert violations == []
    assert not any(pending.values()), "an add was lost"


@pytest.mark.parametrize("seed", range(5))
async def test_concurrent_workers_never_share_an_item(seed: int) -> None:
    await run_workers(seed, workers=8, items=5, adds=400)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), workers=st.integers(1, 10), items=st.integers(1, 20))
def test_concurrent_workers_never_share_an_item_property(seed: int, workers: int, items: int) -> None:
    asyncio.run(run_workers(seed, workers, items, adds=100))


class QueueModel(RuleBasedStateMachine):
    """The queue against a model of client-go semantics (dirty/processing/FIFO, timers)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.queue: WorkQueue[str] = WorkQueue(clock=self.clock)
        self.model_queue: list[str] = []
        self.model_dirty: set[str] = set()
        self.model_processing: set[str] = set()
        # item -> (deadline, order of the add_after that set it): equal deadlines fire in that order
        self.model_timers: dict[str, tuple[float, int]] = {}
        self.timer_seq = 0

    def _model_add(self, item: str) -> None:
        if item in self.model_dirty:
            return
        self.model_dirty.add(item)
        if item not in self.model_processing:
            self.model_queue.append(item)

    def _model_fire(self) -> None:
        now = self.clock.now()
        for item, (deadline, _) in sorted(self.model_timers.items(), key=lambda kv: kv[1]):
            if deadline <= now:
                del self.model_timers[item]
                self._model_add(item)

    @rule(item=st.sampled_from("abcd"))
    def add(self, item: str) -> None:
        self.queue.add(item)
        self._model_add(item)

    @rule(item=st.sampled_from("abcd"), delay=st.integers(1, 5))
    def add_after(self, item: str, delay: int) -> None:
        self.queue.add_after(item, delay)
        deadline = self.clock.now() + delay
        self.timer_seq += 1
        current = self.model_timers.get(item)
        if current is None or deadline < current[0]:
            self.model_timers[item] = (deadline, self.timer_seq)

    @rule(seconds=st.integers(0, 3))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def get(self) -> None:
        self._model_fire()
        if not self.model_queue:
            with pytest.raises(asyncio.QueueEmpty):
                self.queue.get_nowait()
            return
        expected = self.model_queue.pop(0)
        self.model_dirty.discard(expected)
        self.model_processing.add(expected)
        assert self.queue.get_nowait() == expected

    @precondition(lambda self: self.model_processing)
    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        item = data.draw(st.sampled_from(sorted(self.model_processing)))
        self.queue.done(item)
        self.model_processing.discard(item)
        if item in self.model_dirty:
            self.model_queue.append(item)

    @invariant()
    def same_sizes(self) -> None:
        self._model_fire()
        assert len(self.queue) == len(self.model_queue)
        assert self.queue.processing == len(self.model_processing)
        assert self.queue.waiting == len(self.model_timers)


TestQueueModel = QueueModel.TestCase
TestQueueModel.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


# --- clocks ------------------------------------------------------------------------------------


async def test_monotonic_clock_past_deadline_returns_at_once() -> None:
    clock = MonotonicClock()
    before = clock.now()
    await asyncio.wait_for(clock.sleep_until(before - 10), 5)
    assert clock.now() >= before


async def test_fake_clock_wakes_sleepers_in_deadline_order_and_skips_cancelled() -> None:
    clock = FakeClock(start=100)
    woke: list[str] = []

    async def sleeper(name: str, deadline: float) -> None:
        await clock.sleep_until(deadline)
        woke.append(name)

    late = asyncio.create_task(sleeper("late", 102))
    early = asyncio.create_task(sleeper("early", 101))
    gone = asyncio.create_task(sleeper("gone", 101))
    await settle()
    assert clock.sleepers == 3 and clock.next_deadline == 101
    gone.cancel()
    await settle()
    assert clock.sleepers == 2
    clock.advance(1)
    await settle()
    assert woke == ["early"]
    clock.advance(1)
    await asyncio.wait_for(asyncio.gather(late, early), 5)
    assert woke == ["early", "late"]
    assert clock.sleepers == 0 and clock.next_deadline is None


def test_fake_clock_never_goes_back() -> None:
    with pytest.raises(ValueError, match="time is monotonic"):
        FakeClock().advance(-1)
