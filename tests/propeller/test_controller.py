"""The controller against the in-memory store and the scriptable fake executor (`engine.testing`):
durable attempts across restarts, lost attempts, aborts from other processes, failing cancels and
several executors. Rounds are driven by hand (``reconcile``), so nothing waits for time."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import anyio
import msgspec
import pytest

from engine.errors import AccessDenied, ConfigError, CorruptEvent
from engine.events import AnyEvent, ExecutionAborted, ExecutionCreated, NodeFailed, NodeQueued, NodeRunning
from engine.interfaces import TaskKey
from engine.models import ErrorInfo, TaskOptions
from engine.state import ExecutionState
from engine.testing import FakeExecutor, InMemoryEventStore
from propeller import Controller, PlannerConfig
from tests.propeller._sim import lit, spec_of, task_node

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def launch(store: InMemoryEventStore, spec, execution_id: str = "e1") -> None:  # type: ignore[no-untyped-def]
    created = ExecutionCreated(
        execution_id=execution_id, version=1, at=T0, project="p", domain="development", workflow="wf",
        workflow_version="v", spec=spec, inputs={"x": lit(1)},
    )
    await store.append(execution_id, 0, [created])


def controller(store: InMemoryEventStore, *executors: FakeExecutor, clock: Clock | None = None) -> Controller:
    return Controller(
        store, {e.name: e for e in executors}, config=PlannerConfig(default_executor=executors[0].name, retry_delay=0),
        clock=clock or Clock(),
    )


async def started(ctl: Controller) -> Controller:
    for executor in ctl.executors.values():
        await executor.start(ctl.on_task_report)
    return ctl


async def history(store: InMemoryEventStore, execution_id: str = "e1") -> list:
    return await store.read(execution_id)


KEY1 = TaskKey("e1", "a", 1)


@pytest.fixture
async def store() -> InMemoryEventStore:
    store = InMemoryEventStore()
    await store.start()
    return store


async def test_a_cancel_lost_in_a_crash_is_made_again_after_restart(store: InMemoryEventStore) -> None:
    fake = FakeExecutor(durable=True)
    clock = Clock()
    first = await started(controller(store, fake, clock=clock))
    await launch(store, spec_of(task_node("a", options=TaskOptions(timeout=10))))
    await first.reconcile("e1")
    fake.start_attempt(KEY1)
    await first.reconcile("e1")
    handle = fake.attempt(KEY1).handle
    running = [e for e in await history(store) if isinstance(e, NodeRunning)]
    assert running and running[0].handle == handle  # the durable handle is in the log

    clock.now = T0 + timedelta(seconds=60)

    async def crash(execution_id: str, actions: object) -> None:
        raise SystemExit("the process died after the append, before the cancel")

    first.attempts.dispatch = crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        await first.reconcile("e1")
    failures = [e for e in await history(store) if isinstance(e, NodeFailed)]
    assert failures[-1].error.kind == "timeout"
    assert fake.cancelled == []  # the cancel never went out
    await fake.close()
    await store.release("e1")

    second = await started(controller(store, fake, clock=clock))
    await second.reconcile("e1")
    assert (KEY1, handle) in fake.cancelled  # derived from the log, with the recorded handle


async def test_an_attempt_lost_without_a_call_back_is_a_system_failure_and_retried(store: InMemoryEventStore) -> None:
    fake = FakeExecutor()
    ctl = await started(controller(store, fake))
    await launch(store, spec_of(task_node("a")))
    await ctl.reconcile("e1")
    fake.start_attempt(KEY1)
    await ctl.reconcile("e1")
    fake.lose(KEY1)  # no report: only a poll can notice
    await ctl.reconcile("e1")
    assert not any(isinstance(e, NodeFailed) for e in await history(store))

    ctl.poll_in_flight()  # what the periodic revisit does
    await ctl.reconcile("e1")
    failed = [e for e in await history(store) if isinstance(e, NodeFailed)]
    assert len(failed) == 1 and failed[0].error.kind == "system" and "lost" in failed[0].error.message
    await ctl.reconcile("e1")  # the retry (back-off 0) goes out as attempt 2
    assert [r.key for r in fake.submitted] == [KEY1, TaskKey("e1", "a", 2)]


async def test_an_abort_written_by_another_process_cancels_the_running_attempt(store: InMemoryEventStore) -> None:
    fake = FakeExecutor()
    ctl = await started(controller(store, fake))
    await launch(store, spec_of(task_node("a")))
    await ctl.reconcile("e1")
    fake.start_attempt(KEY1)
    await ctl.reconcile("e1")

    other = store.sibling()  # another process on the same database
    await other.start()
    version = await other.current_version("e1")
    await other.append("e1", version, [ExecutionAborted(execution_id="e1", version=version + 1, at=T0, reason="x")])

    ctl.poll_in_flight()
    await ctl.reconcile("e1")
    assert [key for key, _ in fake.cancelled] == [KEY1]
    assert ctl.attempts.done_with("e1")


async def test_a_cancel_that_fails_keeps_the_attempt_tracked_and_is_tried_again(store: InMemoryEventStore) -> None:
    fake = FakeExecutor()
    ctl = await started(controller(store, fake))
    await launch(store, spec_of(task_node("a")))
    await ctl.reconcile("e1")
    fake.start_attempt(KEY1)
    await ctl.reconcile("e1")
    fake.fail_next_cancel = RuntimeError("executor unreachable")
    version = await store.current_version("e1")
    await store.append("e1", version, [ExecutionAborted(execution_id="e1", version=version + 1, at=T0)])
    ctl.refresh("e1")
    await ctl.reconcile("e1")
    assert KEY1 in ctl.attempts.tracked("e1") and "e1" in ctl.attempts.busy()
    await ctl.reconcile("e1")
    assert [key for key, _ in fake.cancelled] == [KEY1, KEY1]
    assert ctl.attempts.done_with("e1")


async def test_an_attempt_that_was_running_when_its_process_died_is_a_system_failure(store: InMemoryEventStore) -> None:
    fake = FakeExecutor()  # in-process work: it dies with the engine
    first = await started(controller(store, fake))
    await launch(store, spec_of(task_node("a", options=TaskOptions(system_retries=1))))
    await first.reconcile("e1")
    fake.start_attempt(KEY1)
    await first.reconcile("e1")
    await fake.close()  # the process died
    await store.release("e1")

    for restart in range(2):
        ctl = await started(controller(store, fake))
        await ctl.reconcile("e1")  # polls the recorded attempt by handle: lost
        await ctl.reconcile("e1")  # the retry goes out
        key = TaskKey("e1", "a", restart + 2)
        if restart == 0:
            fake.start_attempt(key)
            await ctl.reconcile("e1")
            await fake.close()
            await store.release("e1")
    state = ExecutionState.fold(await history(store))
    assert state.phase == "failed"  # the system budget (1 retry) is spent: no crash loop
    assert state.nodes["a"].system_failures == 2


async def test_a_queued_attempt_is_submitted_again_after_a_restart(store: InMemoryEventStore) -> None:
    fake = FakeExecutor()
    first = await started(controller(store, fake))
    await launch(store, spec_of(task_node("a")))
    await first.reconcile("e1")
    await fake.close()
    await store.release("e1")
    second = await started(controller(store, fake))
    await second.reconcile("e1")
    assert [r.key for r in fake.submitted] == [KEY1, KEY1]  # same attempt: submission is idempotent per key


async def test_tasks_pick_their_executor_and_the_others_run_on_the_default(store: InMemoryEventStore) -> None:
    local, gpu = FakeExecutor(name="local"), FakeExecutor(name="gpu")
    ctl = await started(controller(store, local, gpu))
    spec = spec_of(task_node("a"), task_node("b", options=TaskOptions(executor="gpu")))
    await launch(store, spec)
    await ctl.reconcile("e1")
    assert [r.key.node_id for r in local.submitted] == ["a"]
    assert [r.key.node_id for r in gpu.submitted] == ["b"]


async def test_an_executor_that_starts_on_submit_gets_its_start_recorded_before_the_body_runs(
    store: InMemoryEventStore,
) -> None:
    fake = FakeExecutor(gates_start=True, starts_on_submit=True)
    ctl = await started(controller(store, fake))
    await launch(store, spec_of(task_node("a")))
    await ctl.reconcile("e1")
    kinds = [type(e).__name__ for e in await history(store)]
    assert kinds[-2:] == ["NodeQueued", "NodeRunning"]  # one round, one append
    assert fake.released == [KEY1]


async def test_a_gated_start_is_released_once_node_running_is_durable(store: InMemoryEventStore) -> None:
    fake = FakeExecutor(gates_start=True)
    ctl = await started(controller(store, fake))
    await launch(store, spec_of(task_node("a")))
    await ctl.reconcile("e1")
    fake.start_attempt(KEY1)
    assert fake.released == []
    await ctl.reconcile("e1")
    assert isinstance((await history(store))[-1], NodeRunning)
    assert fake.released == [KEY1]
    fake.succeed(KEY1, {"o0": lit(2)})
    await ctl.reconcile("e1")
    state = ExecutionState.fold(await history(store))
    assert state.phase == "succeeded"
    assert msgspec.msgpack.decode(state.nodes["a"].outputs["o0"]) == 2  # type: ignore[index]


class UnmarkableStore(InMemoryEventStore):
    """Reads of ``corrupt`` executions raise CorruptEvent (counted); `quarantine` raises ``refusal``
    (None: it marks) and counts its calls."""

    def __init__(self, refusal: Exception | None) -> None:
        super().__init__()
        self.refusal = refusal
        self.corrupt: set[str] = set()
        self.marks = 0
        self.corrupt_reads = 0
        self.tried = anyio.Event()

    async def read(self, execution_id: str, after: int = 0) -> list[AnyEvent]:
        if execution_id in self.corrupt:
            self.corrupt_reads += 1
            raise CorruptEvent(execution_id, 1, "its checksum does not chain from the event before it")
        return await super().read(execution_id, after=after)

    async def quarantine(self, execution_id: str) -> None:
        self.marks += 1
        self.tried.set()
        if self.refusal is not None:
            raise self.refusal
        await super().quarantine(execution_id)


@pytest.mark.parametrize(
    "refusal",
    [AccessDenied("tenant", "permission denied for table executions"), ConfigError("store 'x' cannot quarantine")],
    ids=["access-denied", "cannot-quarantine"],
)
async def test_a_store_that_cannot_mark_a_quarantine_neither_kills_the_loop_nor_gets_the_execution_run_again(
    refusal: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    store = UnmarkableStore(refusal)
    await store.start()
    await launch(store, spec_of(task_node("a")), "bad")
    store.corrupt.add("bad")
    rounds: list[str] = []
    good_round = anyio.Event()
    fake = FakeExecutor()
    ctl = await started(controller(store, fake))
    ctl.workers = 1
    reconcile = ctl.reconcile

    async def counted(execution_id: str) -> None:
        rounds.append(execution_id)
        await reconcile(execution_id)
        if execution_id == "good":
            good_round.set()

    ctl.reconcile = counted  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="propeller")
    async with anyio.create_task_group() as group:
        await group.start(ctl.run)
        with anyio.fail_after(5):
            await store.tried.wait()
        # the one worker survived: a new execution still gets its rounds
        await launch(store, spec_of(task_node("a")), "good")
        ctl.enqueue("good")
        with anyio.fail_after(5):
            await good_round.wait()
        assert isinstance((await history(store, "good"))[-1], NodeQueued)
        # the projection still lists it as running: sweeps retry the mark, never a round
        await ctl.resync()
        await ctl.resync()
        await anyio.sleep(0.1)
        group.cancel_scope.cancel()

    assert store.corrupt_reads == 1, rounds
    assert store.marks == 3
    lines = [r for r in caplog.records if "bad" in r.getMessage()]
    assert [r.levelname for r in lines] == ["ERROR", "WARNING"]  # once each, not at every sweep
    assert all(r.exc_info is None for r in lines)
    assert type(refusal).__name__ in lines[1].getMessage()

    store.refusal = None  # the mark goes through at the next sweep, and sweeps stop retrying it
    await ctl.resync()
    assert store.marks == 4
    assert [s.status for s in (await store.list_executions()).items if s.execution_id == "bad"] == ["quarantined"]
    await ctl.resync()
    assert store.marks == 4


async def test_an_execution_left_for_want_of_its_code_is_looked_at_again_at_each_resync(
    store: InMemoryEventStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop that cannot load an execution's task leaves it alone, says so once, and takes it
    up at a later sweep once the code loads (a module fixed on disk), instead of never again."""
    caplog.set_level(logging.INFO, logger="slipstream.propeller")
    fake = FakeExecutor(can_run=False, auto_succeed={"o0": lit(2)})
    ctl = await started(controller(store, fake))
    await launch(store, spec_of(task_node("a")))
    for _ in range(3):  # the first sweep, then two more while the code is still missing
        await ctl.resync()
        assert len(ctl.queue) == 1
        await ctl.reconcile(await ctl.queue.get())
        ctl.queue.done("e1")
    assert [type(e).__name__ for e in await history(store)] == ["ExecutionCreated"]
    said = [r for r in caplog.records if "leaving execution e1" in r.getMessage()]
    assert len(said) == 1 and "cannot be loaded here" in said[0].getMessage()

    fake.runnable = True  # the module imports now
    await ctl.resync()
    await ctl.reconcile(await ctl.queue.get())
    ctl.queue.done("e1")
    assert "ExecutionStarted" in [type(e).__name__ for e in await history(store)]
    assert fake.submitted and fake.submitted[0].key == KEY1


async def test_a_sweep_reads_the_tail_only_of_executions_another_writer_appended_to(store: InMemoryEventStore) -> None:
    fake = FakeExecutor()
    ctl = await started(controller(store, fake))
    for execution_id in ("e1", "e2"):
        await launch(store, spec_of(task_node("a")), execution_id)
        await ctl.reconcile(execution_id)
        fake.start_attempt(TaskKey(execution_id, "a", 1))
        await ctl.reconcile(execution_id)
    other = store.sibling()  # another process records e2's attempt lost (it took e2 over a while)
    await other.start()
    version = await other.current_version("e2")
    lost = ErrorInfo(kind="system", message="lost")
    await other.append("e2", version, [NodeFailed(execution_id="e2", version=version + 1, at=T0, node_id="a",
                                                  attempt=1, error=lost)])

    reads: list[tuple[str, int]] = []
    read = store.read

    async def counted(execution_id: str, after: int = 0) -> list:
        reads.append((execution_id, after))
        return await read(execution_id, after)

    store.read = counted  # type: ignore[method-assign]
    await ctl.resync()
    assert len(ctl.queue) == 2
    for _ in range(2):
        execution_id = await ctl.queue.get()
        await ctl.reconcile(execution_id)
        ctl.queue.done(execution_id)
    assert reads == [("e2", version)]  # its tail; e1's cached state is current
    assert fake.submitted[-1].key == TaskKey("e2", "a", 2)  # the failure was seen: a retry


async def test_a_sweeps_rounds_wait_behind_an_execution_with_something_new(store: InMemoryEventStore) -> None:
    fake = FakeExecutor()
    ctl = await started(controller(store, fake))
    for execution_id in ("e1", "e2", "e3"):
        await launch(store, spec_of(task_node("a")), execution_id)
        await ctl.reconcile(execution_id)
    await ctl.resync()
    ctl.poll_in_flight()
    fake.start_attempt(TaskKey("e1", "a", 1))  # its report: a round with something to record
    assert ctl.queue.get_nowait() == "e1"  # listed last (newest first), and its round goes first
    assert {ctl.queue.get_nowait(), ctl.queue.get_nowait()} == {"e2", "e3"}
