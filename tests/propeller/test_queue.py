"""WorkQueue: client-go workqueue semantics, driven by a FakeClock (no real sleeps)."""

from __future__ import annotations

import asyncio
import random

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
    queue.add("a")
    assert len(queue) == 0, "an item being processed is not queued again before done()"


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
    assert len(queue) == 0
    queue.add("a")  # nobody holds it any more: queued at once
    assert len(queue) == 1


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


# --- background lane ---------------------------------------------------------------------------


async def test_background_items_wait_behind_every_foreground_item() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_background("s1")
    queue.add_background("s2")
    queue.add("a")
    queue.add_background("a")  # already needs processing: keeps its lane
    queue.add("b")
    assert len(queue) == 4
    assert drain_ready(queue) == ["a", "b", "s1", "s2"]


async def test_a_background_item_wakes_a_waiting_worker() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await settle()
    queue.add_background("s")
    assert await asyncio.wait_for(getter, 5) == "s"


async def test_add_moves_a_waiting_background_item_to_the_front_lane() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for item in ["s1", "s2", "s3"]:
        queue.add_background(item)
    queue.add("a")
    queue.add("s3")  # something new happened to s3: it goes before the sweep's other items
    assert len(queue) == 4
    assert drain_ready(queue) == ["a", "s3", "s1", "s2"]
    for item in ["a", "s3", "s1", "s2"]:
        queue.done(item)
    queue.add_background("s3")  # its old place in the lane is gone: it queues at the end
    queue.add_background("s4")
    assert drain_ready(queue) == ["s3", "s4"]


async def test_readd_while_processing_keeps_the_lane_of_its_most_urgent_add() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("b")
    assert queue.get_nowait() == "a"
    queue.add_background("a")  # a sweep only: back of the background lane after done
    queue.add_background("s")
    queue.done("a")
    assert drain_ready(queue) == ["b", "s", "a"]
    queue.done("a")
    queue.done("b")
    queue.done("s")

    queue.add("a")
    assert queue.get_nowait() == "a"
    queue.add_background("a")
    queue.add("a")  # a wake-up too: the front lane
    queue.add_background("s")
    queue.done("a")
    assert drain_ready(queue) == ["a", "s"]


async def test_a_steady_foreground_load_does_not_starve_the_background_lane() -> None:
    queue: WorkQueue[str] = WorkQueue()
    run = WorkQueue.FOREGROUND_RUN
    for i in range(2):
        queue.add_background(f"s{i}")
    for i in range(3 * run):
        queue.add(f"f{i}")
    order = drain_ready(queue)
    assert order.index("s0") == run and order.index("s1") == 2 * run + 1
    assert [item for item in order if item.startswith("f")] == [f"f{i}" for i in range(3 * run)]
    # with nothing in the background lane, front items in a row are not counted against it
    for item in order:
        queue.done(item)
    for i in range(run + 2):
        queue.add(f"f{i}")
    queue.add_background("s")
    assert drain_ready(queue)[0] == "f0"


async def test_shutdown_still_hands_out_background_items() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_background("s")
    queue.shutdown()
    queue.add_background("t")  # ignored after shutdown
    assert await queue.get() == "s"
    with pytest.raises(QueueShutDown):
        await queue.get()


# --- delaying queue ----------------------------------------------------------------------------


async def test_add_after_fires_at_deadline() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 10)
    assert len(queue) == 0
    clock.advance(9.999)
    assert len(queue) == 0
    clock.advance(0.001)
    assert len(queue) == 1
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


def assert_backs_off(queue: WorkQueue[str], clock: FakeClock, item: str, delay: float, early: float) -> None:
    """``add_rate_limited(item)`` parks ``item`` for ``delay``: not ready ``early`` before, ready ``early`` after."""
    queue.add_rate_limited(item)
    clock.advance(delay - early)
    assert len(queue) == 0, f"{item!r} ready before its back-off of {delay}s"
    clock.advance(2 * early)  # past the deadline, whatever the rounding of the clock's float sums
    assert queue.get_nowait() == item
    queue.done(item)


def test_rate_limited_backoff_grows_caps_and_forgets() -> None:
    clock = FakeClock()
    # powers of two: the fake clock's sums stay exact
    queue: WorkQueue[str] = WorkQueue(clock=clock, base_delay=0.125, max_delay=4.0)
    for delay in [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]:
        assert_backs_off(queue, clock, "a", delay, early=1 / 1024)
    assert_backs_off(queue, clock, "b", 0.125, early=1 / 1024)  # per item
    queue.forget("a")
    assert_backs_off(queue, clock, "a", 0.125, early=1 / 1024)


def test_rate_limited_backoff_never_overflows() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)  # defaults: 5 ms, at most 60 s
    for _ in range(5000):  # 2.0**4999 would overflow a float
        queue.add_rate_limited("a")
    clock.advance(1)  # the first (earliest) deadline wins; later ones only counted failures
    assert drain_ready(queue) == ["a"]
    queue.done("a")
    assert_backs_off(queue, clock, "a", 60.0, early=0.5)
    assert_backs_off(queue, clock, "b", 0.005, early=0.001)


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
    assert len(queue) == 0


async def test_readd_during_processing_survives_shutdown() -> None:
    # client-go: Done() queues a dirty item even after ShutDown, because the add came first.
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    item = await queue.get()
    queue.add("a")
    queue.shutdown()
    queue.done(item)
    assert await queue.get() == "a"


# --- concurrency -------------------------------------------------------------------------------


async def run_workers(seed: int, workers: int, items: int, adds: int) -> None:
    """Many workers plus a random adder (in both lanes): no item is ever held by two workers,
    none is lost."""
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
        if rng.random() < 0.3:
            queue.add_background(item)
        else:
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
    """The queue against a model of client-go semantics (dirty/processing/FIFO, timers), with
    the background lane and its share under load."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.queue: WorkQueue[str] = WorkQueue(clock=self.clock)
        self.queue.FOREGROUND_RUN = 2  # short, so that a few steps reach the background lane's turn
        self.model_queue: list[str] = []
        self.model_background: list[str] = []
        self.model_background_after_done: set[str] = set()
        self.model_run = 0
        self.model_dirty: set[str] = set()
        self.model_processing: set[str] = set()
        # item -> (deadline, order of the add_after that set it): equal deadlines fire in that order
        self.model_timers: dict[str, tuple[float, int]] = {}
        self.timer_seq = 0

    def _model_add(self, item: str) -> None:
        if item in self.model_dirty:
            if item in self.model_background:
                self.model_background.remove(item)
                self.model_queue.append(item)
            self.model_background_after_done.discard(item)
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

    @rule(item=st.sampled_from("abcd"))
    def add_background(self, item: str) -> None:
        self.queue.add_background(item)
        if item in self.model_dirty:
            return
        self.model_dirty.add(item)
        if item in self.model_processing:
            self.model_background_after_done.add(item)
        else:
            self.model_background.append(item)

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
        if self.model_background and (not self.model_queue or self.model_run >= 2):
            expected = self.model_background.pop(0)
            self.model_run = 0
        elif self.model_queue:
            expected = self.model_queue.pop(0)
            self.model_run = self.model_run + 1 if self.model_background else 0
        else:
            with pytest.raises(asyncio.QueueEmpty):
                self.queue.get_nowait()
            return
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
            if item in self.model_background_after_done:
                self.model_background_after_done.discard(item)
                self.model_background.append(item)
            else:
                self.model_queue.append(item)

    @invariant()
    def same_sizes(self) -> None:
        self._model_fire()
        assert len(self.queue) == len(self.model_queue) + len(self.model_background)


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
